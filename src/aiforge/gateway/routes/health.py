"""Operational routes without authentication: ``/health`` and ``/metrics``."""

from __future__ import annotations

from collections.abc import Callable

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from aiforge.gateway.access import OpenAccess
from aiforge.gateway.metrics import PROMETHEUS_CONTENT_TYPE, GatewayMetrics
from aiforge.router.directory import ReplicaDirectory

FleetStatus = Callable[[], list[dict[str, object]]]
"""Every deployment with its replicas (the controller's ``status``), for ``/health``."""

router = APIRouter(tags=["Operations"])


@router.get("/health", summary="Gateway, deployment and replica states")
async def health(request: Request) -> Response:
    """200 while every deployment that wants replicas has a ready one (``degraded`` when
    some replicas are not ready), 503 when some has none. A deployment scaled to zero (or
    undeployed) wants none, so it never makes the gateway unavailable."""
    directory: ReplicaDirectory = request.app.state.directory
    fleet: FleetStatus | None = request.app.state.fleet_status
    deployments = fleet() if fleet is not None else []
    status, code = _overall(directory, deployments)
    auth = "off" if isinstance(request.app.state.authenticator, OpenAccess) else "on"
    body = {"status": status, "gateway": "ok", "auth": auth, "deployments": deployments}
    return Response(orjson.dumps(body), status_code=code, media_type="application/json")


def _overall(directory: ReplicaDirectory, deployments: list[dict[str, object]]) -> tuple[str, int]:
    idle = {d.get("name") for d in deployments if _wants_no_replica(d)}
    names = [name for name in directory.models() if name not in idle]
    if not names or any(directory.ready_count_of(name) == 0 for name in names):
        return "unavailable", 503
    replicas = [r for d in deployments for r in _replicas(d)]
    if all(r.get("state") == "ready" for r in replicas):
        return "ok", 200
    return "degraded", 200


def _wants_no_replica(deployment: dict[str, object]) -> bool:
    """Scaled to zero on purpose (no replicas, nothing to attach to), or undeployed."""
    if deployment.get("undeployed") is True:
        return True
    spec = deployment.get("spec")
    return isinstance(spec, dict) and spec.get("replicas") == 0 and not spec.get("endpoints")


def _replicas(deployment: dict[str, object]) -> list[dict[str, object]]:
    replicas = deployment.get("replicas")
    return [r for r in replicas if isinstance(r, dict)] if isinstance(replicas, list) else []


@router.get("/metrics", summary="Prometheus metrics")
async def metrics(request: Request) -> Response:
    registry: GatewayMetrics = request.app.state.metrics
    return Response(registry.render(), media_type=PROMETHEUS_CONTENT_TYPE)
