"""The gateway's HTTP/1.1 front: inference requests answered without the ASGI stack.

Every connection to the gateway starts here. While its requests are ``POST`` to an
inference route in the plain form :func:`~aiforge.gateway.front.head.read_head` accepts,
:class:`FrontProtocol` reads them, calls :meth:`OpenAIHandler.answer` — the request path
every route shares: auth, limits, routing, failover, metering — and writes the answer
itself: a plain answer in one write, a stream in chunked coding as its events arrive. The
first request it does not serve (another route, the console, a chunked upload, a head it
does not read) hands the connection to uvicorn's own protocol with every byte received so
far; from then on the connection is uvicorn's, exactly as without the front. uvicorn's
server still owns the listening socket, the lifespan and shutdown (it calls
:meth:`FrontProtocol.shutdown` on each connection, then waits for them to close).

Why: on this hop the ASGI layers — uvicorn's request cycle, the scope, ``receive`` and
``send`` messages, Starlette's request and response objects — cost more CPU than the
request path itself (auth, limits and the usage journal together ~35 µs), and at one
connection the gateway's CPU per request *is* the latency it adds.

What it keeps: the request id (``x-request-id``) on every answer, OpenAI's envelope for a
failure of the gateway itself (500), a client that disconnects ends its request (its
``left`` returns; a stream's task is cancelled) and is recorded once, the keep-alive
timeout, back-pressure (a stream waits while the client's socket buffer is full; pipelined
requests wait, reading paused, while one is answered), and graceful shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from starlette.responses import Response, StreamingResponse

from aiforge.gateway.errors import error_response
from aiforge.gateway.front.head import (
    HEAD_END,
    MAX_HEAD_BYTES,
    RequestHead,
    read_head,
    request_line_may_match,
)
from aiforge.gateway.front.wire import CHUNKED_END, chunk, response_head
from aiforge.gateway.request_id import (
    HEADER,
    INFERENCE_ROUTES,
    internal_error,
    new_request_id,
)
from aiforge.protocol.openai.errors import OpenAIError

if TYPE_CHECKING:
    import uvicorn
    from uvicorn.server import ServerState

    from aiforge.gateway.handler import OpenAIHandler

log = logging.getLogger(__name__)

_REQUEST_ID = HEADER.encode()
PIPELINE_BUFFER_BYTES = 64 * 1024
"""Bytes of later requests read ahead while one is answered, before reading pauses."""
NATIVE_BODY_BYTES = 64 * 1024
"""The largest body the front reads itself. A larger one goes to uvicorn with its
connection, which reads no more than this before the handler has checked the caller's key:
the front reads a whole body first, and must not hold megabytes for a caller it then
refuses."""
ProtocolFactory = Callable[..., asyncio.Protocol]


def fallback_protocol() -> ProtocolFactory:
    """uvicorn's own HTTP/1.1 protocol: httptools' (llhttp) when installed, else h11's."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # pragma: no cover - uvicorn[standard] brings httptools
        from uvicorn.protocols.http.h11_impl import H11Protocol

        return H11Protocol
    return HttpToolsProtocol


def front_protocol(handler: OpenAIHandler, *, max_body_bytes: int) -> ProtocolFactory:
    """What ``uvicorn.Config(http=...)`` takes: a :class:`FrontProtocol` per connection,
    answering with ``handler`` and handing other requests to uvicorn's protocol."""
    fallback = fallback_protocol()

    def create(
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> asyncio.Protocol:
        return FrontProtocol(
            config, server_state, app_state, _loop, handler=handler,
            max_body_bytes=max_body_bytes, fallback=fallback,
        )  # fmt: skip

    return create


class FrontProtocol(asyncio.Protocol):
    """One client connection, served natively until it asks for something else."""

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        loop: asyncio.AbstractEventLoop | None,
        *,
        handler: OpenAIHandler,
        max_body_bytes: int,
        fallback: ProtocolFactory,
    ) -> None:
        self._config = config
        self._server_state = server_state
        self._app_state = app_state
        self._loop = loop or asyncio.get_running_loop()
        self._handler = handler
        self._native_body_bytes = min(max_body_bytes, NATIVE_BODY_BYTES)
        self._fallback = fallback
        self._keep_alive_s = float(config.timeout_keep_alive)
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self._head: RequestHead | None = None
        """A head whose body is still arriving."""
        self._exchange: asyncio.Task[None] | None = None
        """The request being answered."""
        self._streaming = False
        self._lost = False
        self._lost_waiter: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None
        """Set while the transport's write buffer is full."""
        self._reading_paused = False
        self._closing = False
        """Close once the request being answered is (shutdown, or ``Connection: close``)."""
        self._idle_since = 0.0
        self._timer: asyncio.TimerHandle | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._server_state.connections.add(self)  # type: ignore[arg-type]
        self._idle_since = self._loop.time()
        self._timer = self._loop.call_later(self._keep_alive_s, self._check_idle)

    def data_received(self, data: bytes) -> None:
        self._buffer = self._buffer + data if self._buffer else data
        if self._exchange is None:
            self._next()
        elif len(self._buffer) > PIPELINE_BUFFER_BYTES and not self._reading_paused:
            self._pause_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._server_state.connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
        if self._lost_waiter is not None and not self._lost_waiter.done():
            self._lost_waiter.set_result(None)
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        if self._streaming and self._exchange is not None:
            self._exchange.cancel()
        head, self._head = self._head, None
        if head is not None and self._exchange is None:
            self._track(self._handler.left_mid_upload(
                head.kind, head.path, new_request_id(), head.headers))  # fmt: skip

    def pause_writing(self) -> None:
        if self._writable is None or self._writable.done():
            self._writable = self._loop.create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    # what uvicorn's server calls

    def shutdown(self) -> None:
        """Close now when idle, else once the answer in progress is complete."""
        self._closing = True
        if self._exchange is None and self._transport is not None:
            self._transport.close()

    # reading requests

    def _next(self) -> None:
        """Act on what the buffer holds: answer a complete request, wait for more of one,
        or hand the connection to uvicorn."""
        buffer = self._buffer
        if not buffer or self._lost or self._closing:
            return
        head = self._head
        if head is None:
            end = buffer.find(HEAD_END)
            if end < 0:
                if not request_line_may_match(buffer, INFERENCE_ROUTES):
                    self._hand_over()
                elif len(buffer) > MAX_HEAD_BYTES:
                    self._refuse_head()
                return
            head = read_head(buffer, end, INFERENCE_ROUTES)
            if head is None or head.content_length > self._native_body_bytes:
                # uvicorn answers it: a large body is read only after its key was checked
                # (uvicorn stops reading at 64 KiB until the app asks), one over the limit
                # is a 413
                self._hand_over()
                return
            self._head = head
        stop = head.size + head.content_length
        if len(buffer) < stop:
            return  # the body is still arriving
        body, self._buffer, self._head = buffer[head.size : stop], buffer[stop:], None
        self._exchange = self._loop.create_task(self._answer(head, body))

    def _refuse_head(self) -> None:
        """An inference request whose head does not end within :data:`MAX_HEAD_BYTES`: a 431
        and the connection closed (uvicorn's parser would wait for it without a bound)."""
        transport = self._transport
        assert transport is not None
        error = OpenAIError(
            f"The request's header section is larger than {MAX_HEAD_BYTES} bytes.",
            status_code=431,
            code="request_header_fields_too_large",
        )
        response = error_response(error)
        extra = self._server_headers(new_request_id())
        head = response_head(431, response.raw_headers, extra, chunked=False, close=True)
        transport.write(head + response.body)
        self._buffer, self._closing = b"", True
        transport.close()

    def _hand_over(self) -> None:
        """From now on uvicorn's protocol serves this connection, from the bytes received."""
        transport = self._transport
        assert transport is not None
        self._server_state.connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
        protocol = self._fallback(
            config=self._config, server_state=self._server_state,
            app_state=self._app_state, _loop=self._loop,
        )  # fmt: skip
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()
        data, self._buffer, self._head = self._buffer, b"", None
        protocol.data_received(data)

    # answering

    async def _answer(self, head: RequestHead, body: bytes) -> None:
        request_id = new_request_id()
        close = self._closing or not head.keep_alive
        started = False
        try:
            try:
                response = await self._handler.answer(
                    head.kind, head.path, request_id, head.headers, body, self._until_lost
                )
            except OpenAIError as exc:
                response = error_response(exc)
            started = True
            close = close or self._closing
            await self._send(response, request_id, close)
        except Exception:
            log.exception("unhandled error answering %s", request_id)
            if started:
                close = True
            else:
                await self._send(error_response(internal_error()), request_id, close)
        finally:
            self._done(close)

    async def _send(self, response: Response, request_id: str, close: bool) -> None:
        transport = self._transport
        assert transport is not None
        extra = self._server_headers(request_id)
        if not isinstance(response, StreamingResponse):
            try:
                if not self._lost:
                    head = response_head(response.status_code, response.raw_headers, extra,
                                         chunked=False, close=close)  # fmt: skip
                    transport.write(head + response.body)
            finally:
                if response.background is not None:
                    await response.background()
            return
        self._streaming = True
        current = asyncio.current_task()
        try:
            if not self._lost:
                transport.write(response_head(response.status_code, response.raw_headers,
                                              extra, chunked=True, close=close))  # fmt: skip
            async for part in response.body_iterator:
                data = part.encode() if isinstance(part, str) else bytes(part)
                if data and not self._lost:
                    transport.write(chunk(data))
                    if self._writable is not None:
                        await self._writable
            if not self._lost:
                transport.write(CHUNKED_END)
        except asyncio.CancelledError:
            if not self._lost or current is None or current.uncancel() > 0:
                raise
        finally:
            self._streaming = False
            close_stream = getattr(response, "aclose", None)
            if close_stream is not None:
                await close_stream()

    def _server_headers(self, request_id: str) -> list[tuple[bytes, bytes]]:
        """What the server adds to every answer: uvicorn's (date, server) and the request id."""
        return [*self._server_state.default_headers, (_REQUEST_ID, request_id.encode())]

    def _done(self, close: bool) -> None:
        """The answer is written: close, or wait for (or start on) the next request."""
        self._exchange = None
        self._server_state.total_requests += 1
        transport = self._transport
        if transport is None or self._lost:
            return
        if close or self._closing:
            transport.close()
            return
        self._idle_since = self._loop.time()
        if self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()
        self._next()

    async def _until_lost(self) -> None:
        """Returns once the client has disconnected (the request's ``left``)."""
        if self._lost:
            return
        if self._lost_waiter is None:
            self._lost_waiter = self._loop.create_future()
        await asyncio.shield(self._lost_waiter)

    # keeping connections

    def _check_idle(self) -> None:
        """The keep-alive timeout: one timer per connection, re-armed when it fires."""
        transport = self._transport
        if transport is None or self._lost:
            return
        now = self._loop.time()
        if self._exchange is not None or self._buffer:  # busy: look again a timeout later
            self._timer = self._loop.call_at(now + self._keep_alive_s, self._check_idle)
            return
        due = self._idle_since + self._keep_alive_s
        if now >= due:
            transport.close()
        else:
            self._timer = self._loop.call_at(due, self._check_idle)

    def _pause_reading(self) -> None:
        assert self._transport is not None
        self._reading_paused = True
        self._transport.pause_reading()

    def _track(self, work: Any) -> None:
        task: asyncio.Task[None] = self._loop.create_task(work)
        tasks = self._server_state.tasks
        tasks.add(task)
        task.add_done_callback(tasks.discard)
