"""What goes back to a client on the request path besides a plain answer: the relayed
stream's response (whose cleanup always runs), the SSE error event that ends a broken or
shut-down stream, and noticing that the client left."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final

import anyio
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from aiforge.protocol.openai.errors import OpenAIError

SHUTTING_DOWN: Final = "shutting_down"
"""The error code (and usage ``error_type``) of a request the gateway's shutdown ended."""
_STREAM_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


class RelayResponse(StreamingResponse):
    """A streaming response that always runs ``cleanup`` once it ends, however it ends
    (even when the client vanished before the first byte), so the upstream connection is
    released and usage is recorded at once."""

    def __init__(
        self, content: AsyncIterator[bytes], *, cleanup: Callable[[], Awaitable[None]]
    ) -> None:
        super().__init__(content, media_type="text/event-stream", headers=_STREAM_HEADERS)
        self._cleanup = cleanup

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Stream the body; a client that disconnects ends it (the generator is cancelled)
        without an error. What Starlette's ``StreamingResponse`` does for ASGI < 2.4, with
        one watcher task instead of a task group and a second task per stream."""
        try:
            await self._stream_until_left(receive, send)
        finally:
            await self.aclose()

    async def _stream_until_left(self, receive: Receive, send: Send) -> None:
        current = asyncio.current_task()
        assert current is not None
        watch = _Departure(current)
        watcher = asyncio.ensure_future(watch.wait(receive))
        try:
            await self.stream_response(send)
        except asyncio.CancelledError:
            if not watch.left or current.uncancel() > 0:
                raise
        finally:
            watcher.cancel()
        if watch.error is not None:
            raise watch.error

    async def aclose(self) -> None:
        """End the relay (for a consumer inside the gateway that reads ``body_iterator``
        itself): the stream's generator is closed and ``cleanup`` runs, once."""
        with anyio.CancelScope(shield=True):
            close = getattr(self.body_iterator, "aclose", None)
            if close is not None:
                await close()
            await self._cleanup()


class _Departure:
    """Cancels ``task`` (a stream's) once its client disconnects, or once listening for
    that fails (the error is kept for the stream to raise)."""

    __slots__ = ("error", "left", "task")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.left = False
        self.error: Exception | None = None

    async def wait(self, receive: Receive) -> None:
        try:
            await client_left(receive)
        except Exception as exc:
            self.error = exc
        self.left = True
        self.task.cancel()


async def client_left(receive: Receive) -> None:
    """Returns when the client disconnects (``http.disconnect``; the body was read already)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def stream_error_event(request_id: str, *, shutting_down: bool = False) -> bytes:
    """The SSE event that ends a stream whose replica broke mid-way, or that the gateway's
    shutdown cut (OpenAI's clients raise it as an ``APIError``); no ``[DONE]`` follows."""
    if shutting_down:
        error = OpenAIError(
            f"The server is shutting down; the answer is incomplete (request {request_id}).",
            status_code=503,
            type="service_unavailable_error",
            code=SHUTTING_DOWN,
        )
    else:
        error = OpenAIError(
            f"The replica serving this stream failed mid-answer; the answer is incomplete "
            f"(request {request_id}).",
            status_code=502,
            type="server_error",
            code="upstream_error",
        )
    return b"data: " + error.body() + b"\n\n"
