"""Queries over the tenancy tables. Keyword-only arguments; no authorization here.

Every function takes an open :class:`~sqlalchemy.orm.Session` and leaves committing to
the caller (:class:`aiforge.platform.services.admin.AdminService` owns the unit of work).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from aiforge.platform.db.tenancy import (
    ApiKeyRow,
    KeyLimitRow,
    MembershipRow,
    OrganizationRow,
    PlatformCounterRow,
    ProjectLimitRow,
    ProjectRow,
    UserRow,
)
from aiforge.platform.domain.names import name_key
from aiforge.platform.domain.roles import Role
from aiforge.platform.services.ids import new_id

ACCESS_VERSION = "access_version"


def _now() -> datetime:
    return datetime.now(UTC)


# -- organizations and projects ---------------------------------------------
def add_organization(session: Session, *, name: str) -> OrganizationRow:
    row = OrganizationRow(id=new_id("org"), name=name, name_key=name_key(name), created_at=_now())
    session.add(row)
    session.flush()
    return row


def get_organization(session: Session, *, organization_id: str) -> OrganizationRow | None:
    return session.get(OrganizationRow, organization_id)


def find_organization(session: Session, *, name: str) -> OrganizationRow | None:
    """The organization named ``name`` up to case and width (its name key)."""
    query = select(OrganizationRow).where(OrganizationRow.name_key == name_key(name))
    return session.scalars(query).first()


def list_organizations(
    session: Session, *, only_id: str | None = None
) -> Sequence[OrganizationRow]:
    query = select(OrganizationRow).order_by(OrganizationRow.created_at, OrganizationRow.id)
    if only_id is not None:
        query = query.where(OrganizationRow.id == only_id)
    return session.scalars(query).all()


def add_project(session: Session, *, organization_id: str, name: str) -> ProjectRow:
    row = ProjectRow(
        id=new_id("proj"),
        organization_id=organization_id,
        name=name,
        name_key=name_key(name),
        created_at=_now(),
    )
    session.add(row)
    session.flush()
    return row


def get_project(session: Session, *, project_id: str) -> ProjectRow | None:
    return session.get(ProjectRow, project_id)


def find_project(session: Session, *, organization_id: str, name: str) -> ProjectRow | None:
    query = select(ProjectRow).where(
        ProjectRow.organization_id == organization_id, ProjectRow.name_key == name_key(name)
    )
    return session.scalars(query).first()


def list_projects(
    session: Session, *, organization_id: str | None = None, only_id: str | None = None
) -> Sequence[ProjectRow]:
    query = select(ProjectRow).order_by(ProjectRow.created_at, ProjectRow.id)
    if organization_id is not None:
        query = query.where(ProjectRow.organization_id == organization_id)
    if only_id is not None:
        query = query.where(ProjectRow.id == only_id)
    return session.scalars(query).all()


# -- users and memberships ----------------------------------------------------
def add_user(session: Session, *, email: str, name: str) -> UserRow:
    row = UserRow(
        id=new_id("user"), email=email, email_key=name_key(email), name=name, created_at=_now()
    )
    session.add(row)
    session.flush()
    return row


def get_user(session: Session, *, user_id: str) -> UserRow | None:
    return session.get(UserRow, user_id)


def find_user(session: Session, *, email: str) -> UserRow | None:
    """The user with ``email`` up to case and width."""
    return session.scalars(select(UserRow).where(UserRow.email_key == name_key(email))).first()


def list_users(session: Session, *, project_id: str | None = None) -> Sequence[UserRow]:
    """Every user, or the members of one project."""
    query = select(UserRow).order_by(UserRow.created_at, UserRow.id)
    if project_id is not None:
        members = select(MembershipRow.user_id).where(MembershipRow.project_id == project_id)
        query = query.where(UserRow.id.in_(members))
    return session.scalars(query).all()


def user_in_project(session: Session, *, user_id: str, project_id: str) -> bool:
    query = select(MembershipRow.id).where(
        MembershipRow.user_id == user_id, MembershipRow.project_id == project_id
    )
    return session.scalars(query).first() is not None


def find_membership(
    session: Session, *, user_id: str, organization_id: str, project_id: str | None
) -> MembershipRow | None:
    query = select(MembershipRow).where(
        MembershipRow.user_id == user_id,
        MembershipRow.organization_id == organization_id,
        (
            MembershipRow.project_id.is_(None)
            if project_id is None
            else MembershipRow.project_id == project_id
        ),
    )
    return session.scalars(query).first()


def put_membership(
    session: Session, *, user_id: str, organization_id: str, project_id: str | None, role: Role
) -> MembershipRow:
    """Create the membership, or change its role if it exists."""
    row = find_membership(
        session, user_id=user_id, organization_id=organization_id, project_id=project_id
    )
    if row is None:
        row = MembershipRow(
            id=new_id("mem"),
            user_id=user_id,
            organization_id=organization_id,
            project_id=project_id,
            role=role,
            created_at=_now(),
        )
        session.add(row)
    else:
        row.role = role
    session.flush()
    return row


def list_memberships(
    session: Session, *, organization_id: str, project_id: str | None
) -> Sequence[MembershipRow]:
    query = select(MembershipRow).where(MembershipRow.organization_id == organization_id)
    query = query.where(
        MembershipRow.project_id.is_(None)
        if project_id is None
        else MembershipRow.project_id == project_id
    )
    return session.scalars(query.order_by(MembershipRow.created_at, MembershipRow.id)).all()


def delete_membership(session: Session, *, membership: MembershipRow) -> None:
    session.delete(membership)
    session.flush()


# -- API keys -------------------------------------------------------------------
def add_key(session: Session, *, row: ApiKeyRow) -> ApiKeyRow:
    session.add(row)
    session.flush()
    return row


def get_key(session: Session, *, key_id: str) -> ApiKeyRow | None:
    return session.get(ApiKeyRow, key_id)


def find_key_by_prefix(session: Session, *, prefix: str) -> ApiKeyRow | None:
    return session.scalars(select(ApiKeyRow).where(ApiKeyRow.prefix == prefix)).first()


def find_key_by_hash(session: Session, *, secret_hash: str) -> ApiKeyRow | None:
    query = select(ApiKeyRow).where(ApiKeyRow.secret_hash == secret_hash)
    return session.scalars(query).first()


def list_keys(session: Session, *, project_id: str) -> Sequence[ApiKeyRow]:
    query = select(ApiKeyRow).where(ApiKeyRow.project_id == project_id)
    return session.scalars(query.order_by(ApiKeyRow.created_at, ApiKeyRow.id)).all()


def platform_admin_keys(session: Session) -> Sequence[ApiKeyRow]:
    query = select(ApiKeyRow).where(ApiKeyRow.is_platform_admin.is_(True))
    return session.scalars(query.order_by(ApiKeyRow.created_at)).all()


def cacheable_keys(
    session: Session,
) -> Sequence[tuple[ApiKeyRow, str, KeyLimitRow | None]]:
    """Every key not revoked, with its organization id and its limits (for the cache)."""
    query = (
        select(ApiKeyRow, ProjectRow.organization_id, KeyLimitRow)
        .join(ProjectRow, ProjectRow.id == ApiKeyRow.project_id)
        .outerjoin(KeyLimitRow, KeyLimitRow.key_id == ApiKeyRow.id)
        .where(ApiKeyRow.revoked_at.is_(None))
    )
    return [(key, org_id, limits) for key, org_id, limits in session.execute(query).all()]


# -- limits -----------------------------------------------------------------------
def get_key_limits(session: Session, *, key_id: str) -> KeyLimitRow | None:
    return session.get(KeyLimitRow, key_id)


def get_project_limits(session: Session, *, project_id: str) -> ProjectLimitRow | None:
    return session.get(ProjectLimitRow, project_id)


def all_project_limits(session: Session) -> Sequence[ProjectLimitRow]:
    return session.scalars(select(ProjectLimitRow)).all()


def put_key_limits(session: Session, *, key_id: str, values: dict[str, int | None]) -> KeyLimitRow:
    row = session.get(KeyLimitRow, key_id) or KeyLimitRow(key_id=key_id)
    for name, value in values.items():
        setattr(row, name, value)
    session.add(row)
    session.flush()
    return row


def put_project_limits(
    session: Session, *, project_id: str, values: dict[str, int | None]
) -> ProjectLimitRow:
    row = session.get(ProjectLimitRow, project_id) or ProjectLimitRow(project_id=project_id)
    for name, value in values.items():
        setattr(row, name, value)
    session.add(row)
    session.flush()
    return row


# -- the access version counter ------------------------------------------------------
def access_version(session: Session) -> int:
    row = session.get(PlatformCounterRow, ACCESS_VERSION)
    return 0 if row is None else row.value


def bump_access_version(session: Session) -> None:
    """Tell every gateway sharing this database that keys or limits changed."""
    result = session.execute(
        update(PlatformCounterRow)
        .where(PlatformCounterRow.name == ACCESS_VERSION)
        .values(value=PlatformCounterRow.value + 1)
    )
    if getattr(result, "rowcount", 0) == 0:
        session.add(PlatformCounterRow(name=ACCESS_VERSION, value=1))
    session.flush()
