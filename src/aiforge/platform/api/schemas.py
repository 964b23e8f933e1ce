"""Admin API wire models in ``Base / Create / Update / Public`` variants.

``*Public`` models are built from table rows (``from_attributes``); a key's secret appears
only once, in :class:`ApiKeyCreated`.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from aiforge.platform.domain.key_record import KeyStatus
from aiforge.platform.domain.roles import Role

_NAME = Field(min_length=1, max_length=200)


class _Public(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# -- organizations ---------------------------------------------------------
class OrganizationBase(BaseModel):
    name: str = _NAME


class OrganizationCreate(OrganizationBase):
    pass


class OrganizationPublic(OrganizationBase, _Public):
    id: str
    created_at: datetime


# -- projects --------------------------------------------------------------
class ProjectBase(BaseModel):
    name: str = _NAME


class ProjectCreate(ProjectBase):
    organization_id: str


class ProjectPublic(ProjectBase, _Public):
    id: str
    organization_id: str
    created_at: datetime


# -- users and memberships -------------------------------------------------
class UserBase(BaseModel):
    email: str = Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")
    name: str = Field(default="", max_length=200)


class UserCreate(UserBase):
    pass


class UserPublic(UserBase, _Public):
    id: str
    created_at: datetime


class MembershipCreate(BaseModel):
    """Add a user by ``user_id``, or by ``email`` (the user is created if new)."""

    user_id: str | None = None
    email: str | None = Field(default=None, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")
    name: str = Field(default="", max_length=200)
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
    name: str = Field(default="", max_length=200)
    role: Role = "member"
    allowed_models: list[str] | None = Field(
        default=None, description="Models this key may call; null for every model."
    )
    region: str | None = Field(default=None, max_length=64, description="The key's home region.")
    expires_at: datetime | None = Field(default=None, description="Aware timestamp; null: never.")


class ApiKeyCreate(ApiKeyBase):
    pass


class ApiKeyUpdate(BaseModel):
    """Only the fields sent are changed (send ``null`` to clear a field)."""

    name: str | None = Field(default=None, max_length=200)
    allowed_models: list[str] | None = None
    region: str | None = Field(default=None, max_length=64)
    expires_at: datetime | None = None


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

    requests_per_minute: int | None = Field(default=None, ge=0)
    tokens_per_minute: int | None = Field(default=None, ge=0)
    max_concurrent: int | None = Field(default=None, ge=0)
    tokens_per_day: int | None = Field(default=None, ge=0)
    tokens_per_month: int | None = Field(default=None, ge=0)


class LimitsUpdate(LimitsBase):
    """The full set of limits (PUT semantics: omitted fields become unlimited)."""


class LimitsPublic(LimitsBase):
    scope: str = Field(description="'key' or 'project'")
    subject_id: str
