"""OpenAI's error envelope for the admin API.

Every admin router is built with :class:`EnvelopeRoute`, so platform refusals, auth
failures and validation errors leave as ``{"error": {"message", "type", "param", "code"}}``
with the right status whatever app the router is mounted on (the gateway's or a test's).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from aiforge.types import AuthError
from aiforge.platform.domain.errors import (
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    PlatformError,
)

_STATUS_AND_TYPE: tuple[tuple[type[PlatformError], int, str], ...] = (
    (NotFound, 404, "invalid_request_error"),
    (Forbidden, 403, "permission_error"),
    (Conflict, 409, "invalid_request_error"),
    (InvalidRequest, 400, "invalid_request_error"),
)


def error_body(
    message: str, *, type_: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """OpenAI's error envelope."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(
    status: int, message: str, *, type_: str, param: str | None = None, code: str | None = None
) -> JSONResponse:
    return JSONResponse(
        error_body(message, type_=type_, param=param, code=code), status_code=status
    )


def platform_error_response(error: PlatformError) -> JSONResponse:
    for cls, status, type_ in _STATUS_AND_TYPE:
        if isinstance(error, cls):
            return error_response(
                status, error.message, type_=type_, param=error.param, code=error.code
            )
    return error_response(400, error.message, type_="invalid_request_error", code=error.code)


def auth_error_response(error: AuthError) -> JSONResponse:
    type_ = "permission_error" if error.status == 403 else "invalid_request_error"
    response = error_response(error.status, error.message, type_=type_, code=error.code)
    if error.status == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    return response


def validation_error_response(error: RequestValidationError) -> JSONResponse:
    first = error.errors()[0] if error.errors() else {}
    location = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path")]
    param = ".".join(location) or None
    message = str(first.get("msg", "invalid request"))
    if param:
        message = f"{param}: {message}"
    return error_response(400, message, type_="invalid_request_error", param=param, code=None)


class EnvelopeRoute(APIRoute):
    """An APIRoute whose errors (including those raised by dependencies) use the envelope."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def envelope_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except PlatformError as error:
                return platform_error_response(error)
            except AuthError as error:
                return auth_error_response(error)
            except RequestValidationError as error:
                return validation_error_response(error)

        return envelope_handler


def admin_router(**kwargs: Any) -> APIRouter:
    """An APIRouter for ``/admin/v1`` routes that answers errors in OpenAI's envelope."""
    return APIRouter(route_class=EnvelopeRoute, **kwargs)
