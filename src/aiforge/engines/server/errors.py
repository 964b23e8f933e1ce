"""Every failure leaves the replica as OpenAI's error envelope with the right status."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aiforge.protocol.openai.errors import OpenAIError

log = logging.getLogger(__name__)


def error_response(error: OpenAIError) -> JSONResponse:
    return JSONResponse(error.envelope().model_dump(), status_code=error.status_code)


def param_from_loc(loc: Sequence[Any]) -> str | None:
    """``("body", "messages", 0, "content")`` → ``"messages[0].content"``."""
    path = ""
    for part in loc:
        if part == "body" and not path:
            continue
        if isinstance(part, int):
            path += f"[{part}]"
        elif isinstance(part, str) and not _is_union_tag(part):
            path += f".{part}" if path else part
    return path or None


def _is_union_tag(part: str) -> bool:
    # pydantic names union branches in locations, e.g. "str", "list[int]", "function-after[...]"
    return (
        part in {"str", "int", "float", "bool"}
        or "[" in part
        or part.startswith(("function-", "constrained-"))
    )


def _most_telling(errors: Sequence[Any]) -> Any:
    """Of a union's errors (one per branch), the one about the value rather than its type:
    for ``"stop": [5 strings]`` "at most 4 items", not "should be a string"."""
    for error in errors:
        if not str(error.get("type", "")).endswith("_type"):
            return error
    return errors[0]


def validation_error(exc: RequestValidationError) -> OpenAIError:
    errors = exc.errors()
    if not errors:
        return OpenAIError("Invalid request.")
    first = errors[0]
    if first.get("type") != "json_invalid":
        same_param = [e for e in errors if e.get("loc", ())[:2] == first.get("loc", ())[:2]]
        first = _most_telling(same_param)
    if first.get("type") == "json_invalid":
        return OpenAIError(
            "We could not parse the JSON body of your request. (The body must be valid JSON.)",
            code="invalid_json",
        )
    param = param_from_loc(first.get("loc", ()))
    if param is None:
        return OpenAIError(
            "We could not parse the JSON body of your request: it must be a JSON object "
            "(and be sent with Content-Type: application/json).",
            code="invalid_json",
        )
    message = first.get("msg", "Invalid value")
    return OpenAIError(f"Invalid value for '{param}': {message}", param=param)


def install_error_handlers(app: FastAPI) -> None:
    async def openai_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, OpenAIError)
        return error_response(exc)

    async def invalid_request(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return error_response(validation_error(exc))

    async def http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return error_response(OpenAIError(str(exc.detail), status_code=exc.status_code, type=kind))

    async def unexpected(_: Request, exc: Exception) -> Response:
        log.exception("unhandled error in the replica server")
        return error_response(
            OpenAIError(
                f"Internal server error: {type(exc).__name__}", status_code=500, type="server_error"
            )
        )

    app.add_exception_handler(OpenAIError, openai_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)


class BodySizeLimit:
    """Answers 413 for request bodies over ``max_bytes`` (declared or actually sent)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(scope, receive, send)
            return
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await self._reject(scope, receive, send)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        error = OpenAIError(
            f"Request body too large: the limit is {self.max_bytes} bytes.",
            status_code=413,
            code="request_too_large",
        )
        await error_response(error)(scope, receive, send)
