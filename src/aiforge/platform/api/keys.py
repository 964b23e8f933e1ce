"""``/admin/v1`` routes for API keys and limits (per key and per project)."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, status

from aiforge.platform.api.deps import CurrentPrincipal
from aiforge.platform.api.errors import admin_router
from aiforge.platform.api.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyPublic,
    ApiKeyUpdate,
    LimitsPublic,
    LimitsUpdate,
)
from aiforge.platform.api.tenancy import ERROR_RESPONSES
from aiforge.platform.db.tenancy import ApiKeyRow
from aiforge.platform.domain.key_record import key_status
from aiforge.platform.domain.keys import display_key
from aiforge.platform.domain.roles import parse_role
from aiforge.platform.limits.policy import LimitPolicy
from aiforge.platform.services.keys import KeyService


def key_public(row: ApiKeyRow) -> ApiKeyPublic:
    return ApiKeyPublic(
        id=row.id,
        project_id=row.project_id,
        name=row.name,
        role=parse_role(row.role),
        allowed_models=row.allowed_models,
        region=row.region,
        expires_at=row.expires_at,
        prefix=row.prefix,
        display=display_key(row.prefix),
        is_platform_admin=row.is_platform_admin,
        status=key_status(
            now=datetime.now(UTC), expires_at=row.expires_at, revoked_at=row.revoked_at
        ),
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


def limits_public(policy: LimitPolicy, *, scope: str, subject_id: str) -> LimitsPublic:
    return LimitsPublic(
        scope=scope,
        subject_id=subject_id,
        requests_per_minute=policy.requests_per_minute,
        tokens_per_minute=policy.tokens_per_minute,
        max_concurrent=policy.max_concurrent,
        tokens_per_day=policy.tokens_per_day,
        tokens_per_month=policy.tokens_per_month,
    )


def build_keys_router(service: KeyService) -> APIRouter:
    router = admin_router(prefix="/admin/v1", responses=ERROR_RESPONSES)
    _key_routes(router, service)
    _limit_routes(router, service)
    return router


def _key_routes(router: APIRouter, service: KeyService) -> None:
    @router.post(
        "/projects/{project_id}/keys",
        tags=["keys"],
        summary="Create an API key (its secret is in this response only)",
        status_code=status.HTTP_201_CREATED,
        response_model=ApiKeyCreated,
    )
    def create_key(
        project_id: str, body: ApiKeyCreate, principal: CurrentPrincipal
    ) -> ApiKeyCreated:
        row, token = service.create_key(principal, project_id, body)
        return ApiKeyCreated(**key_public(row).model_dump(), key=token)

    @router.get(
        "/projects/{project_id}/keys",
        tags=["keys"],
        summary="List a project's API keys (prefixes only)",
        response_model=list[ApiKeyPublic],
    )
    def list_keys(project_id: str, principal: CurrentPrincipal) -> list[ApiKeyPublic]:
        return [key_public(row) for row in service.list_keys(principal, project_id)]

    @router.get(
        "/keys/{key_id}", tags=["keys"], summary="Get an API key", response_model=ApiKeyPublic
    )
    def get_key(key_id: str, principal: CurrentPrincipal) -> ApiKeyPublic:
        return key_public(service.get_key(principal, key_id))

    @router.patch(
        "/keys/{key_id}",
        tags=["keys"],
        summary="Change a key's name, model allowlist, region or expiry",
        response_model=ApiKeyPublic,
    )
    def update_key(key_id: str, body: ApiKeyUpdate, principal: CurrentPrincipal) -> ApiKeyPublic:
        return key_public(service.update_key(principal, key_id, body))

    @router.post(
        "/keys/{key_id}/revoke",
        tags=["keys"],
        summary="Revoke an API key (takes effect at once)",
        response_model=ApiKeyPublic,
    )
    def revoke_key(key_id: str, principal: CurrentPrincipal) -> ApiKeyPublic:
        return key_public(service.revoke_key(principal, key_id))


def _limit_routes(router: APIRouter, service: KeyService) -> None:
    @router.get(
        "/keys/{key_id}/limits",
        tags=["limits"],
        summary="Get a key's limits",
        response_model=LimitsPublic,
    )
    def get_key_limits(key_id: str, principal: CurrentPrincipal) -> LimitsPublic:
        policy = service.get_key_limits(principal, key_id)
        return limits_public(policy, scope="key", subject_id=key_id)

    @router.put(
        "/keys/{key_id}/limits",
        tags=["limits"],
        summary="Set a key's limits (null: unlimited)",
        response_model=LimitsPublic,
    )
    def set_key_limits(
        key_id: str, body: LimitsUpdate, principal: CurrentPrincipal
    ) -> LimitsPublic:
        policy = service.set_key_limits(principal, key_id, body)
        return limits_public(policy, scope="key", subject_id=key_id)

    @router.get(
        "/projects/{project_id}/limits",
        tags=["limits"],
        summary="Get a project's limits",
        response_model=LimitsPublic,
    )
    def get_project_limits(project_id: str, principal: CurrentPrincipal) -> LimitsPublic:
        policy = service.get_project_limits(principal, project_id)
        return limits_public(policy, scope="project", subject_id=project_id)

    @router.put(
        "/projects/{project_id}/limits",
        tags=["limits"],
        summary="Set a project's limits (platform admin; null: unlimited)",
        response_model=LimitsPublic,
    )
    def set_project_limits(
        project_id: str, body: LimitsUpdate, principal: CurrentPrincipal
    ) -> LimitsPublic:
        policy = service.set_project_limits(principal, project_id, body)
        return limits_public(policy, scope="project", subject_id=project_id)
