"""``/admin/v1`` routes for organizations, projects, users and memberships.

Thin: validate, call one :class:`~aiforge.platform.services.tenancy.TenancyService`
method, shape the answer. Authorization lives in the service (and its pure rules).
"""

from __future__ import annotations

from fastapi import APIRouter, Query, Response, status

from aiforge.platform.api.deps import CurrentPrincipal
from aiforge.platform.api.errors import admin_router
from aiforge.platform.api.schemas import (
    MembershipCreate,
    MembershipPublic,
    OrganizationCreate,
    OrganizationPublic,
    ProjectCreate,
    ProjectPublic,
    UserCreate,
    UserPublic,
)
from aiforge.platform.services.tenancy import TenancyService

ERROR_RESPONSES: dict[int | str, dict[str, str]] = {
    401: {"description": "Missing or invalid API key (OpenAI error envelope)."},
    403: {"description": "The key's role may not do this."},
    404: {"description": "Not found, or belongs to another project."},
}


def build_tenancy_router(service: TenancyService) -> APIRouter:
    router = admin_router(prefix="/admin/v1", responses=ERROR_RESPONSES)
    _organization_routes(router, service)
    _project_routes(router, service)
    _user_routes(router, service)
    return router


def _organization_routes(router: APIRouter, service: TenancyService) -> None:
    @router.post(
        "/organizations",
        tags=["organizations"],
        summary="Create an organization (platform admin)",
        status_code=status.HTTP_201_CREATED,
        response_model=OrganizationPublic,
    )
    def create_organization(
        body: OrganizationCreate, principal: CurrentPrincipal
    ) -> OrganizationPublic:
        row = service.create_organization(principal, body)
        return OrganizationPublic.model_validate(row)

    @router.get(
        "/organizations",
        tags=["organizations"],
        summary="List the organizations the key can see",
        response_model=list[OrganizationPublic],
    )
    def list_organizations(principal: CurrentPrincipal) -> list[OrganizationPublic]:
        rows = service.list_organizations(principal)
        return [OrganizationPublic.model_validate(row) for row in rows]

    @router.get(
        "/organizations/{organization_id}",
        tags=["organizations"],
        summary="Get an organization",
        response_model=OrganizationPublic,
    )
    def get_organization(organization_id: str, principal: CurrentPrincipal) -> OrganizationPublic:
        return OrganizationPublic.model_validate(
            service.get_organization(principal, organization_id)
        )

    @router.put(
        "/organizations/{organization_id}/members",
        tags=["organizations"],
        summary="Add a user to an organization or change their role (platform admin)",
        response_model=MembershipPublic,
    )
    def put_organization_member(
        organization_id: str, body: MembershipCreate, principal: CurrentPrincipal
    ) -> MembershipPublic:
        row = service.put_organization_member(principal, organization_id, body)
        return MembershipPublic.model_validate(row)

    @router.get(
        "/organizations/{organization_id}/members",
        tags=["organizations"],
        summary="List an organization's members (platform admin)",
        response_model=list[MembershipPublic],
    )
    def list_organization_members(
        organization_id: str, principal: CurrentPrincipal
    ) -> list[MembershipPublic]:
        rows = service.list_organization_members(principal, organization_id)
        return [MembershipPublic.model_validate(row) for row in rows]


def _project_routes(router: APIRouter, service: TenancyService) -> None:
    @router.post(
        "/projects",
        tags=["projects"],
        summary="Create a project in an organization (platform admin)",
        status_code=status.HTTP_201_CREATED,
        response_model=ProjectPublic,
    )
    def create_project(body: ProjectCreate, principal: CurrentPrincipal) -> ProjectPublic:
        return ProjectPublic.model_validate(service.create_project(principal, body))

    @router.get(
        "/projects",
        tags=["projects"],
        summary="List the projects the key can see",
        response_model=list[ProjectPublic],
    )
    def list_projects(
        principal: CurrentPrincipal,
        organization_id: str | None = Query(default=None, description="Only this organization."),
    ) -> list[ProjectPublic]:
        rows = service.list_projects(principal, organization_id=organization_id)
        return [ProjectPublic.model_validate(row) for row in rows]

    @router.get(
        "/projects/{project_id}",
        tags=["projects"],
        summary="Get a project",
        response_model=ProjectPublic,
    )
    def get_project(project_id: str, principal: CurrentPrincipal) -> ProjectPublic:
        return ProjectPublic.model_validate(service.get_project(principal, project_id))

    @router.put(
        "/projects/{project_id}/members",
        tags=["projects"],
        summary="Add a user to a project (by id or email) or change their role",
        response_model=MembershipPublic,
    )
    def put_project_member(
        project_id: str, body: MembershipCreate, principal: CurrentPrincipal
    ) -> MembershipPublic:
        row = service.put_project_member(principal, project_id, body)
        return MembershipPublic.model_validate(row)

    @router.get(
        "/projects/{project_id}/members",
        tags=["projects"],
        summary="List a project's members",
        response_model=list[MembershipPublic],
    )
    def list_project_members(
        project_id: str, principal: CurrentPrincipal
    ) -> list[MembershipPublic]:
        rows = service.list_project_members(principal, project_id)
        return [MembershipPublic.model_validate(row) for row in rows]

    @router.delete(
        "/projects/{project_id}/members/{user_id}",
        tags=["projects"],
        summary="Remove a user from a project",
        status_code=status.HTTP_204_NO_CONTENT,
        response_class=Response,
    )
    def remove_project_member(project_id: str, user_id: str, principal: CurrentPrincipal) -> None:
        service.remove_project_member(principal, project_id, user_id)


def _user_routes(router: APIRouter, service: TenancyService) -> None:
    @router.post(
        "/users",
        tags=["users"],
        summary="Create a user (platform admin)",
        status_code=status.HTTP_201_CREATED,
        response_model=UserPublic,
    )
    def create_user(body: UserCreate, principal: CurrentPrincipal) -> UserPublic:
        return UserPublic.model_validate(service.create_user(principal, body))

    @router.get(
        "/users",
        tags=["users"],
        summary="List users (a project key sees its project's members)",
        response_model=list[UserPublic],
    )
    def list_users(principal: CurrentPrincipal) -> list[UserPublic]:
        return [UserPublic.model_validate(row) for row in service.list_users(principal)]

    @router.get("/users/{user_id}", tags=["users"], summary="Get a user", response_model=UserPublic)
    def get_user(user_id: str, principal: CurrentPrincipal) -> UserPublic:
        return UserPublic.model_validate(service.get_user(principal, user_id))
