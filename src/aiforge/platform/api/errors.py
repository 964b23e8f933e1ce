"""OpenAI's error envelope for the admin API (the one :class:`OpenAIError` type).

Every admin router is built with :class:`EnvelopeRoute`, so platform refusals, auth
failures and validation errors leave as ``{"error": {"message", "type", "param", "code"}}``
with the right status whatever app the router is mounted on (the gateway's or a test's).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

from aiforge.gateway.errors import error_response
from aiforge.platform.domain.errors import (
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    PlatformError,
)
from aiforge.protocol.openai.errors import OpenAIError
from aiforge.types import AuthError

_STATUS_AND_TYPE: tuple[tuple[type[PlatformError], int, str], ...] = (
    (NotFound, 404, "invalid_request_error"),
    (Forbidden, 403, "permission_error"),
    (Conflict, 409, "invalid_request_error"),
    (InvalidRequest, 400, "invalid_request_error"),
)


def platform_error(error: PlatformError) -> OpenAIError:
    for cls, status, type_ in _STATUS_AND_TYPE:
        if isinstance(error, cls):
            return OpenAIError(
                error.message, status_code=status, type=type_, param=error.param, code=error.code
            )
    return OpenAIError(error.message, param=error.param, code=error.code)


def auth_error(error: AuthError) -> OpenAIError:
    type_ = "permission_error" if error.status == 403 else "invalid_request_error"
    headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
    return OpenAIError(
        error.message, status_code=error.status, type=type_, code=error.code, headers=headers
    )


def validation_error(error: RequestValidationError) -> OpenAIError:
    first = error.errors()[0] if error.errors() else {}
    location = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path")]
    param = ".".join(location) or None
    message = str(first.get("msg", "invalid request"))
    if param:
        message = f"{param}: {message}"
    return OpenAIError(message, param=param)


class EnvelopeRoute(APIRoute):
    """An APIRoute whose errors (including those raised by dependencies) use the envelope."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def envelope_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except PlatformError as error:
                return error_response(platform_error(error))
            except AuthError as error:
                return error_response(auth_error(error))
            except RequestValidationError as error:
                return error_response(validation_error(error))

        return envelope_handler


def admin_router(**kwargs: Any) -> APIRouter:
    """An APIRouter for ``/admin/v1`` routes that answers errors in OpenAI's envelope."""
    return APIRouter(route_class=EnvelopeRoute, **kwargs)
