"""API keys and limits, authorized per caller.

A key is returned with its secret exactly once, by :meth:`KeyService.create_key`; only its
keyed hash is stored. Every change bumps the access version so each gateway's key cache
reloads (this process's at once, others within their refresh interval).

No key gives more than it holds (:mod:`aiforge.platform.domain.grants`): the calling key's
own expiry and limits are read in the same transaction as the change they bound.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from aiforge.platform.api.schemas import ApiKeyCreate, ApiKeyUpdate, LimitsUpdate
from aiforge.platform.db.tenancy import ApiKeyRow
from aiforge.platform.domain.access import (
    check_grant,
    check_key_target,
    check_project,
    narrow_allowlist,
    require_platform_admin,
)
from aiforge.platform.domain.errors import Forbidden, NotFound
from aiforge.platform.domain.grants import (
    Grantor,
    changed_expiry,
    changed_limits,
    new_key_expiry,
    new_key_limits,
)
from aiforge.platform.domain.keys import DEFAULT_PEPPER, issue_key
from aiforge.platform.domain.roles import parse_role
from aiforge.platform.limits.policy import LIMIT_FIELDS, UNLIMITED, LimitPolicy
from aiforge.platform.services import repository as repo
from aiforge.platform.services.authenticator import policy_from_row
from aiforge.platform.services.ids import new_id
from aiforge.platform.services.unit_of_work import UnitOfWork
from aiforge.types import Principal


class KeyService:
    def __init__(self, uow: UnitOfWork, *, pepper: bytes = DEFAULT_PEPPER) -> None:
        self._uow = uow
        self._pepper = pepper

    # -- keys ---------------------------------------------------------------------------
    def create_key(
        self, principal: Principal, project_id: str, data: ApiKeyCreate
    ) -> tuple[ApiKeyRow, str]:
        """Create a key in ``project_id``; returns the row and the secret token (shown once)."""
        check_project(principal, project_id, write=True)
        check_grant(principal, data.role)
        allowed = narrow_allowlist(principal.allowed_models, data.allowed_models)
        issued = issue_key(pepper=self._pepper)
        with self._uow.write(access_changed=True) as session:
            if repo.get_project(session, project_id=project_id) is None:
                raise NotFound(f"project {project_id!r} not found", param="project_id")
            grantor = load_grantor(session, principal)
            limits = new_key_limits(grantor)
            row = repo.add_key(
                session,
                row=ApiKeyRow(
                    id=new_id("key"),
                    project_id=project_id,
                    name=data.name,
                    prefix=issued.prefix,
                    secret_hash=issued.secret_hash,
                    role=data.role,
                    is_platform_admin=False,
                    allowed_models=allowed,
                    region=data.region,
                    created_by_key_id=principal.key_id,
                    created_at=datetime.now(UTC),
                    expires_at=new_key_expiry(grantor, data.expires_at),
                ),
            )
            if limits is not None:
                repo.put_key_limits(session, key_id=row.id, values=limit_values(limits))
        return row, issued.token

    def list_keys(self, principal: Principal, project_id: str) -> Sequence[ApiKeyRow]:
        check_project(principal, project_id, write=False)
        with self._uow.read() as session:
            return repo.list_keys(session, project_id=project_id)

    def get_key(self, principal: Principal, key_id: str) -> ApiKeyRow:
        with self._uow.read() as session:
            return self._visible_key(session, principal, key_id, write=False)

    def update_key(self, principal: Principal, key_id: str, data: ApiKeyUpdate) -> ApiKeyRow:
        """Change only the fields present in ``data`` (``null`` clears them)."""
        sent = data.model_fields_set
        with self._uow.write(access_changed=True) as session:
            row = self._changeable_key(session, principal, key_id)
            if "name" in sent:
                row.name = data.name or ""
            if "allowed_models" in sent:
                row.allowed_models = narrow_allowlist(principal.allowed_models, data.allowed_models)
            if "region" in sent:
                row.region = data.region
            if "expires_at" in sent:
                row.expires_at = changed_expiry(load_grantor(session, principal), data.expires_at)
            session.flush()
            return row

    def revoke_key(self, principal: Principal, key_id: str) -> ApiKeyRow:
        """Revoke at once (idempotent: revoking a revoked key keeps the first time)."""
        with self._uow.write(access_changed=True) as session:
            row = self._changeable_key(session, principal, key_id)
            if row.revoked_at is None:
                row.revoked_at = datetime.now(UTC)
            session.flush()
            return row

    @staticmethod
    def _visible_key(
        session: Session, principal: Principal, key_id: str, *, write: bool
    ) -> ApiKeyRow:
        row = repo.get_key(session, key_id=key_id)
        if row is None:
            raise NotFound(f"API key {key_id!r} not found", param="key_id")
        try:
            check_project(principal, row.project_id, write=write)
        except NotFound:
            raise NotFound(f"API key {key_id!r} not found", param="key_id") from None
        return row

    def _changeable_key(self, session: Session, principal: Principal, key_id: str) -> ApiKeyRow:
        row = self._visible_key(session, principal, key_id, write=True)
        check_key_target(
            principal, target_role=parse_role(row.role), target_is_admin=row.is_platform_admin
        )
        return row

    # -- limits -----------------------------------------------------------------------------
    def get_key_limits(self, principal: Principal, key_id: str) -> LimitPolicy:
        with self._uow.read() as session:
            self._visible_key(session, principal, key_id, write=False)
            return policy_from_row(repo.get_key_limits(session, key_id=key_id))

    def set_key_limits(self, principal: Principal, key_id: str, data: LimitsUpdate) -> LimitPolicy:
        """A project's owner/admin may divide the project's allowance among its keys."""
        with self._uow.write(access_changed=True) as session:
            self._changeable_key(session, principal, key_id)
            wanted = changed_limits(load_grantor(session, principal), policy_from_update(data))
            row = repo.put_key_limits(session, key_id=key_id, values=limit_values(wanted))
            return policy_from_row(row)

    def get_project_limits(self, principal: Principal, project_id: str) -> LimitPolicy:
        check_project(principal, project_id, write=False)
        with self._uow.read() as session:
            if repo.get_project(session, project_id=project_id) is None:
                raise NotFound(f"project {project_id!r} not found", param="project_id")
            row = repo.get_project_limits(session, project_id=project_id)
        return UNLIMITED if row is None else policy_from_row(row)

    def set_project_limits(
        self, principal: Principal, project_id: str, data: LimitsUpdate
    ) -> LimitPolicy:
        """Only a platform admin sets what a project may spend (a project cannot raise its own)."""
        check_project(principal, project_id, write=False)
        require_platform_admin(principal, "set a project's limits")
        with self._uow.write(access_changed=True) as session:
            if repo.get_project(session, project_id=project_id) is None:
                raise NotFound(f"project {project_id!r} not found", param="project_id")
            row = repo.put_project_limits(
                session, project_id=project_id, values=limit_values(policy_from_update(data))
            )
            return policy_from_row(row)


def policy_from_update(data: LimitsUpdate) -> LimitPolicy:
    return LimitPolicy(**{name: getattr(data, name) for name in LIMIT_FIELDS})


def limit_values(policy: LimitPolicy) -> dict[str, int | None]:
    return {name: getattr(policy, name) for name in LIMIT_FIELDS}


def load_grantor(session: Session, principal: Principal) -> Grantor:
    """What the calling key holds, as stored now (a platform admin key is not bounded)."""
    role = parse_role(principal.role)
    if principal.is_platform_admin:
        return Grantor(key_id=principal.key_id, role=role, is_platform_admin=True)
    row = repo.get_key(session, key_id=principal.key_id)
    if row is None:  # deleted since the cache loaded it: grant nothing
        raise Forbidden("the calling API key no longer exists")
    return Grantor(
        key_id=row.id,
        role=role,
        expires_at=row.expires_at,
        limits=policy_from_row(repo.get_key_limits(session, key_id=row.id)),
    )
