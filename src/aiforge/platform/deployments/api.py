"""``/admin/v1/deployments``: the desired state of the fleet, for platform admins only.

Thin: check the caller, call one :class:`DeploymentService` method, add each deployment's
live replicas from the control plane (:class:`LiveReplicas`), shape the answer.

Deployment names may contain ``/`` (``Qwen/Qwen3-0.6B``), so item routes use ``{name:path}``;
``POST /deployments/{name}/scale`` still works because no other POST route takes a name
(a name ending in ``/scale`` is scaled as ``…/scale/scale``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response, status

from aiforge.cluster.deployments import DeploymentSpec, DeploymentSpecError
from aiforge.cluster.sources import ControlPlane
from aiforge.platform.api.deps import CurrentPrincipal
from aiforge.platform.api.errors import admin_router
from aiforge.platform.deployments.schemas import (
    DeploymentApplied,
    DeploymentApply,
    DeploymentCreate,
    DeploymentPublic,
    DeploymentScale,
    DeploymentUpdate,
)
from aiforge.platform.deployments.service import (
    ApplyResult,
    DeploymentService,
    StoredDeployment,
)
from aiforge.platform.domain.access import require_platform_admin
from aiforge.platform.domain.errors import InvalidRequest
from aiforge.types import Principal

__all__ = ["LiveReplicas", "build_deployments_router"]

ERROR_RESPONSES: dict[int | str, dict[str, str]] = {
    400: {"description": "The spec cannot be served; ``param`` names the field."},
    401: {"description": "Missing or invalid API key (OpenAI error envelope)."},
    403: {"description": "Only platform admin keys manage deployments."},
    404: {"description": "No such deployment."},
}


class LiveReplicas:
    """Where the admin API reads each deployment's replicas: the control plane once one is
    attached (the controller is built after the platform), nothing before."""

    def __init__(self, control_plane: ControlPlane | None = None) -> None:
        self.control_plane = control_plane

    def of(self, deployment: str) -> list[dict[str, Any]]:
        if self.control_plane is None:
            return []
        return [dict(replica) for replica in self.control_plane.replicas_of(deployment)]


def _platform_admin(principal: CurrentPrincipal) -> Principal:
    require_platform_admin(principal, "manage deployments")
    return principal


PlatformAdmin = Annotated[Principal, Depends(_platform_admin)]


def build_deployments_router(service: DeploymentService, live: LiveReplicas) -> APIRouter:
    router = admin_router(prefix="/admin/v1/deployments", tags=["deployments"])

    def public(stored: StoredDeployment) -> DeploymentPublic:
        return DeploymentPublic.build(stored, live.of(stored.name))

    @router.get(
        "",
        summary="List deployments with their live replicas",
        response_model=list[DeploymentPublic],
        responses=ERROR_RESPONSES,
    )
    def list_deployments(_: PlatformAdmin) -> list[DeploymentPublic]:
        return [public(stored) for stored in service.list()]

    @router.post(
        "",
        summary="Create a deployment (409 if the name is taken)",
        status_code=status.HTTP_201_CREATED,
        response_model=DeploymentPublic,
        responses={**ERROR_RESPONSES, 409: {"description": "The name is taken."}},
    )
    def create_deployment(body: DeploymentCreate, _: PlatformAdmin) -> DeploymentPublic:
        return public(service.create(_spec(body.to_spec)))

    @router.post(
        "/{name:path}/scale",
        summary="Set a deployment's replica count",
        response_model=DeploymentPublic,
        responses=ERROR_RESPONSES,
    )
    def scale_deployment(name: str, body: DeploymentScale, _: PlatformAdmin) -> DeploymentPublic:
        return public(service.scale(name, body.replicas))

    @router.get(
        "/{name:path}",
        summary="Get a deployment with its live replicas",
        response_model=DeploymentPublic,
        responses=ERROR_RESPONSES,
    )
    def get_deployment(name: str, _: PlatformAdmin) -> DeploymentPublic:
        return public(service.get(name))

    @router.patch(
        "/{name:path}",
        summary="Change some fields of a deployment (replicas, policy, projects, …)",
        response_model=DeploymentPublic,
        responses=ERROR_RESPONSES,
    )
    def update_deployment(name: str, body: DeploymentUpdate, _: PlatformAdmin) -> DeploymentPublic:
        return public(service.update(name, body.changes()))

    @router.put(
        "/{name:path}",
        summary="Create or replace a deployment (idempotent, like kubectl apply)",
        response_model=DeploymentApplied,
        responses={**ERROR_RESPONSES, 201: {"description": "Created."}},
    )
    def apply_deployment(
        name: str, body: DeploymentApply, response: Response, _: PlatformAdmin
    ) -> DeploymentApplied:
        if body.name is not None and body.name != name:
            raise InvalidRequest(
                f"the body names {body.name!r} but the path names {name!r}", param="name"
            )
        result, stored = service.apply(_spec(lambda: body.to_spec(name)))
        if result is ApplyResult.CREATED:
            response.status_code = status.HTTP_201_CREATED
        shown = public(stored)
        return DeploymentApplied(**shown.model_dump(), result=result.value)

    @router.delete(
        "/{name:path}",
        summary="Delete a deployment (its replicas drain, then stop)",
        status_code=status.HTTP_204_NO_CONTENT,
        response_class=Response,
        responses=ERROR_RESPONSES,
    )
    def delete_deployment(name: str, _: PlatformAdmin) -> None:
        service.delete(name)

    return router


def _spec(build: Callable[[], DeploymentSpec]) -> DeploymentSpec:
    """``build()``, with a spec the wire model accepted but the spec type refuses as 400."""
    try:
        return build()
    except DeploymentSpecError as error:
        raise InvalidRequest(error.message, param=error.param) from None
