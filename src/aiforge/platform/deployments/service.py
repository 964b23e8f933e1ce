"""Deployments as desired state: stored in the platform database, read by the controller.

:class:`DeploymentService` is the platform's :class:`aiforge.cluster.sources.DeploymentSource`
(the controller polls :meth:`~DeploymentService.list_deployments` about once a second,
never on the request path) and the one place deployments change. Every change runs in one
transaction and, once committed, calls ``on_change`` (the controller's ``wake``), so the
fleet follows within a tick instead of at the next poll. A change that leaves the spec as
it was (applying the same spec again, scaling to the current count) writes nothing, keeps
the generation and wakes no one.

The service does not authorize: the admin API lets only platform admins reach it, and
in-process callers (``aiforge serve --model``) are trusted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy.orm import Session

from aiforge.cluster.deployments import DeploymentSpec, DeploymentSpecError
from aiforge.platform.deployments import repository as repo
from aiforge.platform.deployments.manifest import check_spec, spec_from_mapping
from aiforge.platform.deployments.table import DeploymentRow
from aiforge.platform.domain.errors import Conflict, InvalidRequest, NotFound
from aiforge.platform.services.unit_of_work import UnitOfWork

__all__ = ["ApplyResult", "DeploymentService", "StoredDeployment"]

logger = logging.getLogger(__name__)


class ApplyResult(StrEnum):
    """What :meth:`DeploymentService.apply` did."""

    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"


@dataclass(frozen=True, slots=True)
class StoredDeployment:
    """A deployment as stored: its spec and bookkeeping."""

    spec: DeploymentSpec
    generation: int
    """1 when created; one more after every change of the spec."""
    created_at: datetime
    updated_at: datetime

    @property
    def name(self) -> str:
        return self.spec.name


class DeploymentService:
    """Create, read, change and delete deployments; the controller's deployment source."""

    def __init__(self, uow: UnitOfWork, *, on_change: Callable[[], None] | None = None) -> None:
        self._uow = uow
        self.on_change: Callable[[], None] = on_change or _nothing
        """Called after every committed change, in the thread that made it (set, made
        loop-safe, by :meth:`PlatformRuntime.attach_control_plane`)."""

    # -- the controller's view ------------------------------------------------------
    async def list_deployments(self) -> list[DeploymentSpec]:
        """Every stored deployment's spec, read in a worker thread. A row this version
        cannot read (written by a newer aiforge, say) is logged and left out rather than
        stopping the controller."""
        return await asyncio.to_thread(self._specs)

    def _specs(self) -> list[DeploymentSpec]:
        specs: list[DeploymentSpec] = []
        with self._uow.read() as session:
            for row in repo.list_deployments(session):
                try:
                    specs.append(repo.spec_of(row))
                except DeploymentSpecError as error:
                    logger.warning("skipping stored deployment %r: %s", row.name, error.message)
        return specs

    # -- reads --------------------------------------------------------------------------
    def list(self) -> list[StoredDeployment]:
        """Every deployment, by name."""
        with self._uow.read() as session:
            return [_stored(row) for row in repo.list_deployments(session)]

    def get(self, name: str) -> StoredDeployment:
        """The deployment named ``name``; raises :class:`NotFound`."""
        with self._uow.read() as session:
            return _stored(_existing(session, name))

    # -- changes ------------------------------------------------------------------------
    def create(self, spec: DeploymentSpec) -> StoredDeployment:
        """Store a new deployment; :class:`Conflict` if the name is taken,
        :class:`InvalidRequest` (with ``param``) if the spec cannot be served."""
        checked = _checked(spec)
        with self._uow.write(conflict=f"a deployment named {spec.name!r} exists") as session:
            _check_projects(session, checked)
            if repo.get_deployment(session, name=checked.name) is not None:
                # Checked here for a clear 409; the primary key still guards a race.
                raise Conflict(f"a deployment named {spec.name!r} exists", param="name")
            stored = _stored(repo.add_deployment(session, spec=checked, now=_now()))
        self.on_change()
        return stored

    def apply(self, spec: DeploymentSpec) -> tuple[ApplyResult, StoredDeployment]:
        """Create the deployment or replace its spec with ``spec`` (``kubectl apply``).
        Idempotent: applying the spec it already has changes nothing."""
        checked = _checked(spec)
        with self._uow.write(conflict=f"a deployment named {spec.name!r} exists") as session:
            _check_projects(session, checked)
            row = repo.get_deployment(session, name=checked.name, for_update=True)
            if row is None:
                result = ApplyResult.CREATED
                row = repo.add_deployment(session, spec=checked, now=_now())
            elif _readable_spec(row) == checked:
                result = ApplyResult.UNCHANGED
            else:
                result = ApplyResult.UPDATED
                repo.replace_spec(session, row=row, spec=checked, now=_now())
            stored = _stored(row)
        if result is not ApplyResult.UNCHANGED:
            self.on_change()
        return result, stored

    def update(self, name: str, changes: Mapping[str, Any]) -> StoredDeployment:
        """Change only the fields in ``changes`` (the spec's JSON shape: ``replicas``,
        ``policy``, ``projects`` — None for every project —, ``engine_args``, …).
        The name cannot change."""
        if "name" in changes and changes["name"] != name:
            raise InvalidRequest("a deployment cannot be renamed", param="name")
        return self._change(name, lambda current: _merged(current, changes))

    def scale(self, name: str, replicas: int) -> StoredDeployment:
        """Set the replica count (within the deployment's min/max)."""
        return self._change(name, lambda current: current.with_replicas(replicas))

    def delete(self, name: str) -> None:
        """Remove the deployment; the controller drains and stops its replicas."""
        with self._uow.write() as session:
            repo.delete_deployment(session, row=_existing(session, name))
        self.on_change()

    def _change(
        self, name: str, edit: Callable[[DeploymentSpec], DeploymentSpec]
    ) -> StoredDeployment:
        with self._uow.write() as session:
            row = _existing(session, name, for_update=True)
            current = repo.spec_of(row)
            wanted = _checked(edit(current))
            changed = wanted != current
            if changed:
                _check_projects(session, wanted)
                repo.replace_spec(session, row=row, spec=wanted, now=_now())
            stored = _stored(row)
        if changed:
            self.on_change()
        return stored


def _nothing() -> None:
    pass


def _now() -> datetime:
    return datetime.now(UTC)


def _stored(row: DeploymentRow) -> StoredDeployment:
    return StoredDeployment(
        spec=repo.spec_of(row),
        generation=row.generation,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _readable_spec(row: DeploymentRow) -> DeploymentSpec | None:
    """The row's spec, or None if this version cannot read it (applying replaces it)."""
    try:
        return repo.spec_of(row)
    except DeploymentSpecError:
        return None


def _existing(session: Session, name: str, *, for_update: bool = False) -> DeploymentRow:
    row = repo.get_deployment(session, name=name, for_update=for_update)
    if row is None:
        raise NotFound(f"deployment {name!r} not found", param="name")
    return row


def _checked(spec: DeploymentSpec) -> DeploymentSpec:
    try:
        return check_spec(spec)
    except DeploymentSpecError as error:
        raise InvalidRequest(error.message, param=error.param) from None


def _merged(current: DeploymentSpec, changes: Mapping[str, Any]) -> DeploymentSpec:
    try:
        return spec_from_mapping({**current.to_dict(), **changes})
    except DeploymentSpecError as error:
        raise InvalidRequest(error.message, param=error.param) from None


def _check_projects(session: Session, spec: DeploymentSpec) -> None:
    if spec.projects is None:
        return
    missing = repo.missing_projects(session, project_ids=spec.projects)
    if missing:
        raise InvalidRequest(f"no project with id {', '.join(missing)}", param="projects")
