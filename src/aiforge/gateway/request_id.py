"""Request ids: the gateway names every ``/v1`` request and tells the client its name.

:class:`RequestIdMiddleware` (pure ASGI, so it costs one closure per request) makes the id
``req-<32 hex>`` and puts it in the scope under :data:`SCOPE_KEY`, where the handler takes
it as the usage ledger's ``request_id`` and forwards it to the replica as ``x-request-id``.
Every response on a ``/v1`` path then carries ``x-request-id: <id>`` — answers, streams and
errors alike (401, 404, 413, 429, ...) — so a client can quote it and an operator can find
its ledger record. An exception no one answered (a bug) becomes a 500 in OpenAI's envelope
here, with the id, unless the response had already started. A client's own
``x-request-id`` is not trusted (it could collide with another request's record); the
gateway's id replaces it.

The middleware is also the inference routes' fast path: a ``POST`` to one of
:data:`INFERENCE_ROUTES` goes straight to ``app.state.handler`` (with its
:class:`~aiforge.gateway.errors.OpenAIError` answered here), skipping FastAPI's routing,
dependency solving and exception middleware — a third of the gateway's own time per request
on this hop. The routes stay registered with FastAPI for the OpenAPI schema and for
requests that reach them some other way; both paths run the same handler.
"""

from __future__ import annotations

import logging
import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aiforge.gateway.errors import error_response
from aiforge.protocol.openai.errors import OpenAIError
from aiforge.types import RequestKind

log = logging.getLogger(__name__)

HEADER = "x-request-id"
SCOPE_KEY = "aiforge.request_id"
_HEADER_BYTES = HEADER.encode()
_PREFIX = "/v1"
INFERENCE_ROUTES: dict[str, RequestKind] = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completion",
    "/v1/embeddings": "embedding",
}


def new_request_id() -> str:
    """A fresh id: ``req-`` and 128 random bits in hex."""
    return "req-" + os.urandom(16).hex()


def scope_request_id(scope: Scope) -> str:
    """The id the middleware gave this request (a fresh one when it did not run)."""
    request_id = scope.get(SCOPE_KEY)
    if not isinstance(request_id, str):
        request_id = scope[SCOPE_KEY] = new_request_id()
    return request_id


class RequestIdMiddleware:
    """Gives every ``/v1`` request an id and adds it to the response's headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(_PREFIX):
            await self.app(scope, receive, send)
            return
        request_id = scope[SCOPE_KEY] = new_request_id()
        header = (_HEADER_BYTES, request_id.encode())
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [h for h in message.get("headers", ()) if h[0].lower() != _HEADER_BYTES]
                headers.append(header)
                message["headers"] = headers
            await send(message)

        try:
            await self._dispatch(scope, receive, send_with_id)
        except Exception:
            if started:
                raise
            log.exception("unhandled error answering %s", request_id)
            await error_response(internal_error())(scope, receive, send_with_id)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = INFERENCE_ROUTES.get(scope["path"])
        if kind is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            response = await scope["app"].state.handler.handle(request, kind, scope["path"])
        except OpenAIError as exc:
            response = error_response(exc)
        await response(scope, receive, send)


class InferenceFastPath:
    """The HTTP server's outermost app (``aiforge serve`` hands it to uvicorn): a ``POST``
    to one of :data:`INFERENCE_ROUTES` goes straight to :class:`RequestIdMiddleware`'s
    dispatch — the same id, handler and error envelopes — without first passing through the
    web framework's own middleware stack (its error, telemetry and body-limit layers, each
    an awaited call on the way in and on every ``send``), which cost about 5% of the
    gateway's CPU per request. Everything else, lifespan included, goes to ``app``."""

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self._inference = RequestIdMiddleware(app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"] in INFERENCE_ROUTES
        ):
            scope["app"] = self.app
            await self._inference(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def internal_error() -> OpenAIError:
    return OpenAIError(
        "The gateway failed on this request; quote its x-request-id when you report it.",
        status_code=500,
        type="server_error",
        code="gateway_error",
    )
