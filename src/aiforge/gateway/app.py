"""The gateway application: the public OpenAI API in front of the replicas.

``create_app`` wires the request path from its seams and puts them on ``app.state`` —
``settings``, ``directory``, ``authenticator``, ``admission``, ``usage_sink``, ``metrics``,
``handler``, ``responses`` (the Responses API), ``fleet_status`` — where routes (and the
platform's admin routers, passed as ``extra_routers``) read them. The replica directory is
filled by the controller, which runs beside the app (``aiforge serve``), never inside the
request path.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from aiforge import __version__
from aiforge.config import Settings
from aiforge.gateway.access import Admission, Authenticator, UsageSink
from aiforge.gateway.errors import error_response, openai_error_handler
from aiforge.gateway.handler import OpenAIHandler
from aiforge.gateway.metrics import GatewayMetrics
from aiforge.gateway.proxy import ReplicaProxy
from aiforge.gateway.request_id import RequestIdMiddleware
from aiforge.gateway.responses import InMemoryResponseStore, ResponsesService, ResponseStore
from aiforge.gateway.routes import health, openai, rerank, responses
from aiforge.gateway.routes.health import FleetStatus
from aiforge.gateway.routes.schema import with_body_schemas
from aiforge.gateway.upstream import UpstreamPool
from aiforge.protocol.openai.errors import OpenAIError
from aiforge.router.directory import ReplicaDirectory

UPSTREAM_CONNECT_TIMEOUT_S = 5.0


def create_app(
    settings: Settings,
    *,
    directory: ReplicaDirectory,
    authenticator: Authenticator,
    admission: Admission,
    usage_sink: UsageSink,
    extra_routers: Sequence[APIRouter] = (),
    fleet_status: FleetStatus | None = None,
    response_store: ResponseStore | None = None,
) -> FastAPI:
    """Build the gateway app over ``directory`` (published to by the controller).

    ``response_store`` keeps stored Responses (``/v1/responses``); the platform passes its
    SQL store, and without one they live in memory (bounded, lost on restart)."""
    pool = UpstreamPool(
        connect_timeout_s=UPSTREAM_CONNECT_TIMEOUT_S, read_timeout_s=settings.upstream_timeout_s
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await pool.aclose()

    app = FastAPI(
        title="aiforge",
        version=__version__,
        lifespan=lifespan,
        description="Open models behind the OpenAI API, with keys, quotas and usage.",
    )
    metrics = GatewayMetrics()
    app.state.settings = settings
    app.state.directory = directory
    app.state.authenticator = authenticator
    app.state.admission = admission
    app.state.usage_sink = usage_sink
    app.state.metrics = metrics
    app.state.fleet_status = fleet_status
    app.state.handler = OpenAIHandler(
        settings,
        directory=directory,
        proxy=ReplicaProxy(pool),
        authenticator=authenticator,
        admission=admission,
        usage_sink=usage_sink,
        metrics=metrics,
    )
    if response_store is None:
        response_store = InMemoryResponseStore()
    app.state.responses = ResponsesService(app.state.handler, response_store)
    app.add_exception_handler(OpenAIError, openai_error_handler)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.include_router(openai.router)
    app.include_router(responses.router)
    app.include_router(rerank.router)
    app.include_router(health.router)
    for router in extra_routers:
        app.include_router(router)
    app.add_middleware(RequestIdMiddleware)
    _describe_bodies(app)
    return app


def _describe_bodies(app: FastAPI) -> None:
    """The OpenAPI schema, with the ``/v1`` request bodies the routes name."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = with_body_schemas(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (unknown path, wrong method) in OpenAI's envelope."""
    assert isinstance(exc, StarletteHTTPException)
    kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
    headers = dict(exc.headers) if exc.headers else None
    return error_response(
        OpenAIError(str(exc.detail), status_code=exc.status_code, type=kind, headers=headers)
    )


async def _validation_error(request: Request, exc: Exception) -> Response:
    """Validation errors of routers added by others (admin API), in OpenAI's envelope."""
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {}
    location = [str(part) for part in first.get("loc", ()) if part not in ("body", "query")]
    return error_response(
        OpenAIError(
            str(first.get("msg", "invalid request")),
            status_code=400,
            param=".".join(location) or None,
            code="invalid_value",
        )
    )
