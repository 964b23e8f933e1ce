"""Admin API wire models in ``Base / Create / Update / Public`` variants.

``*Public`` models are built from table rows (``from_attributes``); a key's secret appears
only once, in :class:`ApiKeyCreated`.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from aiforge.platform.api.fields import (
    AwareTimestamp,
    Email,
    LimitValue,
    ModelName,
    Name,
    OptionalName,
    Region,
)
from aiforge.platform.domain.key_record import KeyStatus
from aiforge.platform.domain.roles import Role


class _Public(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# -- organizations ---------------------------------------------------------
# Request models carry the strict input types (:mod:`aiforge.platform.api.fields`); public
# models show what is stored as it is, so a row written before a rule tightened still reads.
class OrganizationBase(BaseModel):
    name: str


class OrganizationCreate(OrganizationBase):
    name: Name


class OrganizationPublic(OrganizationBase, _Public):
    id: str
    created_at: datetime


# -- projects --------------------------------------------------------------
class ProjectBase(BaseModel):
    name: str


class ProjectCreate(ProjectBase):
    name: Name
    organization_id: str


class ProjectPublic(ProjectBase, _Public):
    id: str
    organization_id: str
    created_at: datetime


# -- users and memberships -------------------------------------------------
class UserBase(BaseModel):
    email: str
    name: str = ""


class UserCreate(UserBase):
    email: Email
    name: OptionalName = ""


class UserPublic(UserBase, _Public):
    id: str
    created_at: datetime


class MembershipCreate(BaseModel):
    """Add a user by ``user_id``, or by ``email`` (the user is created if new)."""

    user_id: str | None = None
    email: Email | None = None
    name: OptionalName = ""
    role: Role = "member"


class MembershipPublic(_Public):
    id: str
    user_id: str
    organization_id: str
    project_id: str | None
    role: Role
    created_at: datetime


# -- API keys --------------------------------------------------------------
class ApiKeyBase(BaseModel):
    name: str = ""
    role: Role = "member"
    allowed_models: list[str] | None = Field(
        default=None, description="Models this key may call; null for every model."
    )
    region: str | None = Field(default=None, description="The key's home region.")
    expires_at: datetime | None = Field(default=None, description="Aware timestamp; null: never.")


class ApiKeyCreate(ApiKeyBase):
    """A key gets at most what the calling key holds: omitted ``expires_at`` and
    ``allowed_models`` default to the caller's own, and its limits start as the caller's."""

    name: OptionalName = ""
    allowed_models: list[ModelName] | None = Field(
        default=None, description="Models this key may call; null for every model."
    )
    region: Region | None = Field(default=None, description="The key's home region.")
    expires_at: AwareTimestamp | None = Field(
        default=None, description="Aware timestamp; null: never (or the caller's expiry)."
    )


class ApiKeyUpdate(BaseModel):
    """Only the fields sent are changed (send ``null`` to clear a field)."""

    name: OptionalName | None = None
    allowed_models: list[ModelName] | None = None
    region: Region | None = None
    expires_at: AwareTimestamp | None = None


class ApiKeyPublic(ApiKeyBase, _Public):
    id: str
    project_id: str
    prefix: str
    display: str = Field(description="The key as shown in lists: its prefix only.")
    is_platform_admin: bool
    status: KeyStatus
    created_at: datetime
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyPublic):
    key: str = Field(description="The secret key. Shown once: it cannot be retrieved again.")


# -- limits ----------------------------------------------------------------
class LimitsBase(BaseModel):
    """Each limit is ``null`` (unlimited) or a non-negative integer."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    max_concurrent: int | None = None
    tokens_per_day: int | None = None
    tokens_per_month: int | None = None


class LimitsUpdate(LimitsBase):
    """The full set of limits (PUT semantics: omitted fields become unlimited), each
    ``null`` or an integer from 0 to 10**15; a key sets none looser than its own."""

    requests_per_minute: LimitValue | None = None
    tokens_per_minute: LimitValue | None = None
    max_concurrent: LimitValue | None = None
    tokens_per_day: LimitValue | None = None
    tokens_per_month: LimitValue | None = None


class LimitsPublic(LimitsBase):
    scope: str = Field(description="'key' or 'project'")
    subject_id: str
