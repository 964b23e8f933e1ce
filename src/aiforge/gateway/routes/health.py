"""Operational routes without authentication: ``/health`` and ``/metrics``."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from aiforge.cluster.replicas import ReplicaState, ReplicaTable
from aiforge.gateway.access import OpenAccess
from aiforge.gateway.metrics import PROMETHEUS_CONTENT_TYPE, GatewayMetrics

router = APIRouter(tags=["Operations"])


@router.get("/health", summary="Gateway and replica states")
async def health(request: Request) -> Response:
    """200 while at least one replica is ready (``degraded`` when some are not), else 503."""
    table: ReplicaTable = request.app.state.replicas
    replicas = table.snapshot()
    ready = sum(1 for r in table if r.state == ReplicaState.READY)
    if ready and ready == len(replicas):
        status, code = "ok", 200
    elif ready:
        status, code = "degraded", 200
    else:
        status, code = "unavailable", 503
    auth = "off" if isinstance(request.app.state.authenticator, OpenAccess) else "on"
    body = {"status": status, "gateway": "ok", "auth": auth, "replicas": replicas}
    return Response(orjson.dumps(body), status_code=code, media_type="application/json")


@router.get("/metrics", summary="Prometheus metrics")
async def metrics(request: Request) -> Response:
    registry: GatewayMetrics = request.app.state.metrics
    return Response(registry.render(), media_type=PROMETHEUS_CONTENT_TYPE)
