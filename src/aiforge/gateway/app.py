"""The gateway application: the public OpenAI API in front of the replicas.

``create_app`` wires the request path from its seams and puts them on ``app.state`` —
``settings``, ``replicas``, ``authenticator``, ``admission``, ``usage_sink``, ``metrics``,
``handler`` — where routes (and the platform's admin routers, passed as ``extra_routers``)
read them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

import httpx
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from aiforge import __version__
from aiforge.cluster.health import ReplicaHealthMonitor
from aiforge.cluster.replicas import ReplicaTable
from aiforge.config import Settings
from aiforge.gateway.access import Admission, Authenticator, UsageSink
from aiforge.gateway.errors import GatewayError, gateway_error_handler
from aiforge.gateway.handler import OpenAIHandler
from aiforge.gateway.metrics import GatewayMetrics
from aiforge.gateway.proxy import ReplicaProxy
from aiforge.gateway.request_id import RequestIdMiddleware
from aiforge.gateway.routes import health, openai
from aiforge.gateway.upstream import UpstreamPool

UPSTREAM_CONNECT_TIMEOUT_S = 5.0


def create_app(
    settings: Settings,
    *,
    replicas: ReplicaTable,
    authenticator: Authenticator,
    admission: Admission,
    usage_sink: UsageSink,
    extra_routers: Sequence[APIRouter] = (),
    monitor: ReplicaHealthMonitor | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """Build the gateway app. ``monitor`` (optional) keeps replica states fresh while it
    runs; ``transport`` replaces the network of the health checks for tests (requests go
    to replicas over :class:`UpstreamPool` connections)."""
    client = httpx.AsyncClient(
        timeout=httpx.Timeout(settings.upstream_timeout_s, connect=UPSTREAM_CONNECT_TIMEOUT_S),
        limits=httpx.Limits(
            max_connections=None, max_keepalive_connections=256, keepalive_expiry=30.0
        ),
        transport=transport,
    )
    pool = UpstreamPool(
        connect_timeout_s=UPSTREAM_CONNECT_TIMEOUT_S, read_timeout_s=settings.upstream_timeout_s
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(monitor.run(client)) if monitor is not None else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await client.aclose()
            await pool.aclose()

    app = FastAPI(
        title="aiforge",
        version=__version__,
        lifespan=lifespan,
        description="Open models behind the OpenAI API, with keys, quotas and usage.",
    )
    metrics = GatewayMetrics()
    app.state.settings = settings
    app.state.replicas = replicas
    app.state.authenticator = authenticator
    app.state.admission = admission
    app.state.usage_sink = usage_sink
    app.state.metrics = metrics
    app.state.http_client = client
    app.state.handler = OpenAIHandler(
        settings,
        replicas=replicas,
        proxy=ReplicaProxy(replicas, pool),
        authenticator=authenticator,
        admission=admission,
        usage_sink=usage_sink,
        metrics=metrics,
    )
    app.add_exception_handler(GatewayError, gateway_error_handler)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.include_router(openai.router)
    app.include_router(health.router)
    for router in extra_routers:
        app.include_router(router)
    app.add_middleware(RequestIdMiddleware)
    return app


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (unknown path, wrong method) in OpenAI's envelope."""
    assert isinstance(exc, StarletteHTTPException)
    kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
    headers = dict(exc.headers) if exc.headers else None
    return GatewayError(exc.status_code, str(exc.detail), type=kind, headers=headers).response()


async def _validation_error(request: Request, exc: Exception) -> Response:
    """Validation errors of routers added by others (admin API), in OpenAI's envelope."""
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {}
    location = [str(part) for part in first.get("loc", ()) if part not in ("body", "query")]
    return GatewayError(
        400,
        str(first.get("msg", "invalid request")),
        param=".".join(location) or None,
        code="invalid_value",
    ).response()
