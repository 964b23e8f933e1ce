"""OpenAI's error envelope for the admin API (the one :class:`OpenAIError` type).

Every admin router is built with :class:`EnvelopeRoute`, so platform refusals, auth
failures and validation errors leave as ``{"error": {"message", "type", "param", "code"}}``
with the right status whatever app the router is mounted on (the gateway's or a test's).
The route also admits the request first (:func:`aiforge.platform.api.guard.admit`: the key,
then the body's size) and answers whatever else goes wrong in the envelope too: a value the
database refuses is a 400, a bug a logged 500 — never a plain-text page.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from aiforge.gateway.errors import error_response
from aiforge.platform.api.guard import admit
from aiforge.platform.domain.errors import (
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    PlatformError,
)
from aiforge.protocol.openai.errors import OpenAIError
from aiforge.types import AuthError

logger = logging.getLogger(__name__)

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


def storage_refused() -> OpenAIError:
    """The database refused a value the request models let through (a safety net)."""
    return OpenAIError(
        "A value in this request is out of range or not valid for its field.",
        code="invalid_value",
    )


def client_closed() -> OpenAIError:
    """The client went away mid-upload (nginx's 499); nobody reads this answer."""
    return OpenAIError(
        "The client closed the request before sending its body.",
        status_code=499,
        code="client_closed_request",
    )


def internal_error() -> OpenAIError:
    return OpenAIError(
        "The admin API failed on this request; the server log has the details.",
        status_code=500,
        type="server_error",
        code="internal_error",
    )


class EnvelopeRoute(APIRoute):
    """An APIRoute that admits the request (key, then body size) before FastAPI reads its
    body, and whose errors (including those raised by dependencies) use the envelope."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def envelope_handler(request: Request) -> Response:
            try:
                return await handler(await admit(request))
            except PlatformError as error:
                return error_response(platform_error(error))
            except AuthError as error:
                return error_response(auth_error(error))
            except RequestValidationError as error:
                return error_response(validation_error(error))
            except OpenAIError as error:
                return error_response(error)
            except ClientDisconnect:
                return error_response(client_closed())
            except HTTPException:
                raise  # FastAPI's own (an unreadable body): the app answers it in the envelope
            except DataError:
                logger.info("the database refused a value on %s", request.url.path, exc_info=True)
                return error_response(storage_refused())
            except Exception:
                logger.exception("admin API error on %s %s", request.method, request.url.path)
                return error_response(internal_error())

        return envelope_handler


def admin_router(**kwargs: Any) -> APIRouter:
    """An APIRouter for ``/admin/v1`` routes that answers errors in OpenAI's envelope."""
    return APIRouter(route_class=EnvelopeRoute, **kwargs)
