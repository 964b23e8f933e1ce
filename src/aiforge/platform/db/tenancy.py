"""Tenancy tables: organizations, projects, users and their roles, API keys, limits.

Rows are plain records: no I/O methods (repositories in :mod:`aiforge.platform.services`
do the queries). Ids are short prefixed strings (``org_…``, ``proj_…``, ``key_…``) so a
log line or a CLI table says what an id names.

Names are unique by their ``*_key`` column (:func:`aiforge.platform.domain.names.name_key`,
the NFKC case-folded name), so the database itself refuses ``Acme`` beside ``ACME``.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from aiforge.platform.db.base import Base, UtcDateTime

ROLE_CHECK = "role IN ('owner', 'admin', 'member', 'viewer')"
NAME_KEY_LENGTH = 1024


class OrganizationRow(Base):
    __tablename__ = "organizations"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    name_key: Mapped[str] = mapped_column(String(NAME_KEY_LENGTH), index=True, unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class ProjectRow(Base):
    __tablename__ = "projects"
    __table_args__ = (
        UniqueConstraint("organization_id", "name", name="uq_projects_org_name"),
        Index("ix_projects_org_name_key", "organization_id", "name_key", unique=True),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    name_key: Mapped[str] = mapped_column(String(NAME_KEY_LENGTH))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class UserRow(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    email_key: Mapped[str] = mapped_column(String(NAME_KEY_LENGTH), index=True, unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class MembershipRow(Base):
    """A user's role in an organization (``project_id`` NULL) or in one project."""

    __tablename__ = "memberships"
    __table_args__ = (
        UniqueConstraint("user_id", "organization_id", "project_id", name="uq_memberships_scope"),
        CheckConstraint(ROLE_CHECK, name="role"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    project_id: Mapped[str | None] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True, nullable=True
    )
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class ApiKeyRow(Base):
    """An API key. Only the keyed hash of the token is stored, never the token."""

    __tablename__ = "api_keys"
    __table_args__ = (CheckConstraint(ROLE_CHECK, name="role"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200), default="")
    prefix: Mapped[str] = mapped_column(String(40), unique=True)
    """The non-secret lookup handle embedded in the token (shown in lists and logs)."""
    secret_hash: Mapped[str] = mapped_column(String(128), index=True, unique=True)
    """HMAC-SHA256(pepper, whole token): what a key is looked up by (no prefix is trusted)."""
    role: Mapped[str] = mapped_column(String(16))
    is_platform_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    allowed_models: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    region: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_by_key_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class _LimitColumns:
    """The five limits of :class:`aiforge.platform.limits.policy.LimitPolicy` (NULL: none),
    64-bit: a month of tokens outgrows a 32-bit column."""

    requests_per_minute: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    tokens_per_minute: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    max_concurrent: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    tokens_per_day: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    tokens_per_month: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class KeyLimitRow(_LimitColumns, Base):
    __tablename__ = "key_limits"

    key_id: Mapped[str] = mapped_column(
        ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True
    )


class ProjectLimitRow(_LimitColumns, Base):
    __tablename__ = "project_limits"

    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )


class PlatformCounterRow(Base):
    """Named counters; ``access_version`` is bumped on every key/limit change so every
    gateway sharing the database knows to reload its key cache."""

    __tablename__ = "platform_counters"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(Integer, default=0)
