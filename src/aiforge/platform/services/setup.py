"""First-start provisioning: the default organization and project, and the admin key.

Idempotent and safe when several gateways start at once against one database (a unique
clash means another process won the race; the row it created is used).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from aiforge.platform.db.tenancy import ApiKeyRow
from aiforge.platform.domain.keys import DEFAULT_PEPPER, IssuedKey, external_key, issue_key
from aiforge.platform.services import repository as repo
from aiforge.platform.services.ids import new_id

DEFAULT_ORGANIZATION = "default"
DEFAULT_PROJECT = "default"
GENERATED_ADMIN_KEY_NAME = "admin (generated at first start)"
CONFIGURED_ADMIN_KEY_NAME = "admin (AIFORGE_ADMIN_KEY)"


@dataclass(frozen=True, slots=True)
class DefaultTenancy:
    organization_id: str
    project_id: str


def ensure_default_tenancy(sessions: sessionmaker[Session]) -> DefaultTenancy:
    """The organization and project the admin key (and a one-user install) lives in."""
    for _attempt in range(3):
        try:
            with sessions.begin() as session:
                org = repo.find_organization(session, name=DEFAULT_ORGANIZATION)
                if org is None:
                    org = repo.add_organization(session, name=DEFAULT_ORGANIZATION)
                project = repo.find_project(
                    session, organization_id=org.id, name=DEFAULT_PROJECT
                ) or repo.add_project(session, organization_id=org.id, name=DEFAULT_PROJECT)
                return DefaultTenancy(organization_id=org.id, project_id=project.id)
        except IntegrityError:
            continue  # another gateway created it first: read theirs
    raise RuntimeError("could not create the default organization and project")


def ensure_admin_key(
    sessions: sessionmaker[Session],
    *,
    project_id: str,
    configured: str | None,
    pepper: bytes = DEFAULT_PEPPER,
) -> str | None:
    """Make sure a platform admin key exists; return a newly generated token, else None.

    ``configured`` (``AIFORGE_ADMIN_KEY``) is adopted as the admin key and any previously
    configured one is revoked, so rotating the variable rotates the key. Without it, a key
    is generated only when no active admin key exists (the first start).
    """
    if configured is not None:
        _adopt_configured_key(
            sessions, project_id=project_id, issued=external_key(configured, pepper=pepper)
        )
        return None
    with sessions.begin() as session:
        now = datetime.now(UTC)
        active = [
            row
            for row in repo.platform_admin_keys(session)
            if row.revoked_at is None and (row.expires_at is None or row.expires_at > now)
        ]
        if active:
            return None
        issued = issue_key(pepper=pepper)
        repo.add_key(session, row=_admin_row(project_id, issued, GENERATED_ADMIN_KEY_NAME))
        repo.bump_access_version(session)
        return issued.token


def _adopt_configured_key(
    sessions: sessionmaker[Session], *, project_id: str, issued: IssuedKey
) -> None:
    try:
        with sessions.begin() as session:
            existing = repo.find_key_by_hash(session, secret_hash=issued.secret_hash)
            if existing is None:
                # A gateway starting alongside may have committed this very key since the
                # lookup above: the same prefix with the same hash is not a clash.
                existing = repo.find_key_by_prefix(session, prefix=issued.prefix)
                if existing is not None and existing.secret_hash != issued.secret_hash:
                    raise RuntimeError("AIFORGE_ADMIN_KEY clashes with another key's prefix")
            if existing is not None:
                existing.revoked_at = None  # the operator asked for exactly this key
            else:
                repo.add_key(session, row=_admin_row(project_id, issued, CONFIGURED_ADMIN_KEY_NAME))
            now = datetime.now(UTC)
            for row in repo.platform_admin_keys(session):
                if row.name == CONFIGURED_ADMIN_KEY_NAME and row.prefix != issued.prefix:
                    row.revoked_at = row.revoked_at or now
            repo.bump_access_version(session)
    except IntegrityError:
        return  # a gateway starting alongside adopted the same key first


def _admin_row(project_id: str, issued: IssuedKey, name: str) -> ApiKeyRow:
    return ApiKeyRow(
        id=new_id("key"),
        project_id=project_id,
        name=name,
        prefix=issued.prefix,
        secret_hash=issued.secret_hash,
        role="owner",
        is_platform_admin=True,
        allowed_models=None,
        region=None,
        created_at=datetime.now(UTC),
    )
