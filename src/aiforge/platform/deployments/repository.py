"""Queries over the ``deployments`` table. Keyword-only arguments; no authorization here.

Every function takes an open :class:`~sqlalchemy.orm.Session` and leaves committing to the
caller (:class:`aiforge.platform.deployments.service.DeploymentService` owns the unit of
work). Rows and specs convert through :func:`spec_of` and :func:`_columns`, the only
places that know how a spec is laid out in columns.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from aiforge.cluster.deployments import DeploymentSpec
from aiforge.platform.db.tenancy import ProjectRow
from aiforge.platform.deployments.manifest import spec_from_mapping
from aiforge.platform.deployments.table import DeploymentRow


def spec_of(row: DeploymentRow) -> DeploymentSpec:
    """The spec a row stores (types checked, serving rules not: a stored spec is served
    as it was accepted)."""
    return spec_from_mapping({name: getattr(row, name) for name in _SPEC_COLUMNS})


def get_deployment(
    session: Session, *, name: str, for_update: bool = False
) -> DeploymentRow | None:
    """The row named ``name``; ``for_update`` locks it (PostgreSQL) until the commit, so
    concurrent changes of one deployment apply one after the other."""
    query = select(DeploymentRow).where(DeploymentRow.name == name)
    if for_update:
        query = query.with_for_update()
    return session.scalars(query).first()


def list_deployments(session: Session) -> Sequence[DeploymentRow]:
    return session.scalars(select(DeploymentRow).order_by(DeploymentRow.name)).all()


def add_deployment(session: Session, *, spec: DeploymentSpec, now: datetime) -> DeploymentRow:
    row = DeploymentRow(**_columns(spec), generation=1, created_at=now, updated_at=now)
    session.add(row)
    session.flush()
    return row


def replace_spec(
    session: Session, *, row: DeploymentRow, spec: DeploymentSpec, now: datetime
) -> DeploymentRow:
    """Store ``spec`` in ``row`` and bump its generation (the caller checked it differs)."""
    for name, value in _columns(spec).items():
        setattr(row, name, value)
    row.generation += 1
    row.updated_at = now
    session.flush()
    return row


def delete_deployment(session: Session, *, row: DeploymentRow) -> None:
    session.delete(row)
    session.flush()


def missing_projects(session: Session, *, project_ids: Iterable[str]) -> list[str]:
    """Those of ``project_ids`` that name no project, sorted."""
    wanted = set(project_ids)
    if not wanted:
        return []
    found = session.scalars(select(ProjectRow.id).where(ProjectRow.id.in_(wanted))).all()
    return sorted(wanted - set(found))


_SPEC_COLUMNS = tuple(DeploymentSpec.__dataclass_fields__)


def _columns(spec: DeploymentSpec) -> dict[str, Any]:
    """The spec as column values (its JSON shape: lists, a placement dict, sorted projects)."""
    return spec.to_dict()
