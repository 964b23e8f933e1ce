"""A small pooled HTTP/1.1 client for the gateway → replica hop.

The hop is the gateway's hot path, and a general client (``httpx``: request and response
models, a connection-pool state machine, h11 events) cost several times more than the rest
of the gateway together. A replica is a known peer on a local network speaking plain
HTTP/1.1, so this client does only that: one keep-alive connection per request from a pool
per origin, the request written with one ``write``, the response parsed by ``httptools``
(llhttp, in C; it comes with ``uvicorn[standard]``) and its body framed by
``Content-Length``, chunked transfer coding, or the connection's end.

Contract: :meth:`UpstreamPool.post` returns an :class:`UpstreamResponse` once the status
line and headers arrived; the caller reads it (:meth:`UpstreamResponse.aread`,
:meth:`UpstreamResponse.aiter_raw` chunk by chunk, or :meth:`UpstreamResponse.aiter_arrivals`
as it arrives) and must :meth:`UpstreamResponse.aclose` it. A fully read response gives its
connection back to the pool; one closed early closes it. Errors are :class:`UpstreamError`;
:class:`UpstreamConnectError` means the replica cannot have started on the request (safe to
retry elsewhere). A pooled connection the replica closed while idle is detected on use and
replaced once, transparently. The read timeout bounds every wait for the replica's next
bytes (the head, then each read of the body). A reader slower than the replica makes the
connection stop reading from its socket once about :data:`_STREAM_LIMIT` bytes wait, so the
replica is slowed down instead of the gateway's memory growing.

Costs, since a stream pays them per event: a connection is an :class:`asyncio.Protocol`
(:class:`_ReplicaConnection`) that parses what arrives as it arrives and wakes the one
reader only when it waits for more — no ``StreamReader``, whose buffering runs per read in
Python, and no chunk decoding in Python (a decoder in Python cost several times what the C
parser does per chunk, a fifth of the client's time on a stream); and the read
timeout is one timer per connection (:class:`_ReadDeadline`), armed by the first wait after
it last fired, not a timer made and cancelled around every read.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from typing import cast

import httptools

_STREAM_LIMIT = 1 << 20
"""Longest header block or chunk-size line accepted from a replica, and the most bytes one
connection buffers for a slow reader before it stops reading its socket."""


class UpstreamError(Exception):
    """The replica could not be reached or broke HTTP/1.1 while answering."""


class UpstreamConnectError(UpstreamError):
    """No request bytes can have reached the replica's application (refused, timed out
    connecting, or the connection died before any response byte)."""


class UpstreamTimeout(UpstreamError):
    """The replica took longer than the read timeout to send the next bytes."""


class _ReadDeadline:
    """The read timeout of one connection: while a read is waiting (between :meth:`begin`
    and :meth:`end`), the replica has ``timeout_s`` to send bytes; when it does not,
    ``on_expiry`` runs (it closes the connection, so the read ends) and :attr:`expired` is
    set. One timer at a time: armed by a wait when none is, re-armed when it fires during a
    wait, dropped when it fires between waits (an idle connection holds none)."""

    __slots__ = ("_handle", "_loop", "_on_expiry", "_since", "_timeout", "expired")

    def __init__(self, timeout_s: float, on_expiry: Callable[[], None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._timeout = timeout_s
        self._on_expiry = on_expiry
        self._since: float | None = None
        self._handle: asyncio.TimerHandle | None = None
        self.expired = False

    def begin(self) -> None:
        self._since = now = self._loop.time()
        if self._handle is None:
            self._handle = self._loop.call_at(now + self._timeout, self._check)

    def end(self) -> None:
        self._since = None

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _check(self) -> None:
        self._handle = None
        if self._since is None:
            return
        now = self._loop.time()
        if now - self._since >= self._timeout:
            self.expired = True
            self._on_expiry()
        else:
            due = max(self._since + self._timeout, now + 0.001)
            self._handle = self._loop.call_at(due, self._check)


class _ReplicaConnection(asyncio.Protocol):
    """One pooled connection: the event loop's protocol, and the callbacks of its response
    parser (``httptools``: llhttp, in C), which takes what arrives as it arrives — the head
    into :attr:`status_code` and :attr:`headers`, the body into pieces waiting for the
    reader (whole chunks, for chunked coding). The one reader — a connection carries one
    exchange at a time — is woken only while it waits (:meth:`wait`). Past
    :data:`_STREAM_LIMIT` waiting body bytes the transport stops reading until the reader
    takes them (:meth:`take`)."""

    __slots__ = ("_chunk", "_chunked", "_loop", "_parser", "_paused", "_ready", "_transport",
                 "_unfit", "_waiter", "_waiting", "body_done", "deadline", "ended", "failure",
                 "head_done", "headers", "idle_since", "received", "status_code")  # fmt: skip

    def __init__(self, read_timeout_s: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._unfit = False
        """It cannot carry another exchange: the replica said so (``connection: close``,
        HTTP/1.0), or bytes came that belong to no answer."""
        self.ended = False
        """No more bytes will arrive (the replica closed its side, or it is closed)."""
        self.failure: str | None = None
        """Why it ended, unless the replica closed it cleanly."""
        self.idle_since = 0.0
        self.deadline = _ReadDeadline(read_timeout_s, self.close)
        """Bounds every wait on this connection (an expired one is closed, never reused)."""
        self.status_code = 0
        self.headers: dict[str, str] = {}
        self.received = 0
        """Bytes of the current answer so far."""
        self.head_done = False
        self.body_done = True
        """The current answer is complete (none is expected before :meth:`send`)."""
        self._chunked = False
        self._chunk: list[bytes] = []
        self._ready: list[bytes] = []
        self._waiting = 0

    @property
    def reusable(self) -> bool:
        """Open, its last answer complete and nothing more arrived: fit for the next."""
        return self.body_done and not self.ended and not self._unfit and not self._ready

    def send(self, request: bytes) -> None:
        """Start an exchange: write ``request``; the answer's state starts afresh."""
        if self.ended or self._transport is None:
            raise ConnectionError(self.failure or "the replica closed the connection")
        self.status_code = self.received = 0
        self.headers = {}
        self.head_done = self.body_done = self._chunked = False
        try:
            self._transport.write(request)
        except (OSError, RuntimeError) as exc:
            raise ConnectionError(f"{type(exc).__name__}: {exc}") from None

    async def wait(self) -> None:
        """Until more bytes arrive or the connection ends; past the read timeout it is
        closed (see ``deadline.expired``). Only while not :attr:`ended`."""
        waiter = self._waiter = self._loop.create_future()
        deadline = self.deadline
        deadline.begin()
        try:
            await waiter
        finally:
            self._waiter = None
            deadline.end()

    def take(self) -> list[bytes]:
        """The body pieces parsed since the last call (reading resumes if it had paused)."""
        ready = self._ready
        if ready:
            self._ready, self._waiting = [], 0
            if self._paused:
                self._paused = False
                if not self.ended and self._transport is not None:
                    self._transport.resume_reading()
        return ready

    def close(self) -> None:
        """Close now, dropping what is unread; a wait on it ends. Idempotent."""
        self.deadline.cancel()
        if not self.ended:
            self.failure, self.ended = "the connection was closed", True
        self._ready = []
        if self._transport is not None:
            self._transport.close()
        self._wake()

    # The event loop's calls.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            if self.body_done:  # what follows the answer is no answer
                self._unfit = True
            else:
                self._break(f"not an HTTP/1.1 answer: {type(exc).__name__}: {exc}")
        if self._waiting > _STREAM_LIMIT or (not self.head_done and self.received > _STREAM_LIMIT):
            self._hold_back()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _hold_back(self) -> None:
        """Too much waits for the reader: stop reading the socket until it takes it (a chunk
        longer than the limit is handed over in pieces, or it could never be taken)."""
        if not self.head_done:
            self._break("the response head is too long")
        elif not self._paused and not self.ended and self._transport is not None:
            if self._chunk:
                self._ready.append(b"".join(self._chunk))
                self._chunk = []
            self._paused = True
            self._transport.pause_reading()

    def eof_received(self) -> bool:
        self.ended = True
        self._wake()
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.deadline.cancel()
        self.ended = True
        if exc is not None and self.failure is None:
            self.failure = f"{type(exc).__name__}: {exc}"
        self._wake()

    # The parser's calls, from inside ``feed_data``.

    def on_message_begin(self) -> None:
        if self.body_done:
            self._unfit = True

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.head_done:  # not a chunked body's trailer fields
            self.headers[name.decode("latin-1").lower()] = value.decode("latin-1").strip()

    def on_headers_complete(self) -> None:
        self.status_code = self._parser.get_status_code()
        self.head_done = True

    def on_chunk_header(self) -> None:
        self._chunked = True

    def on_body(self, body: bytes) -> None:
        (self._chunk if self._chunked else self._ready).append(body)
        self._waiting += len(body)

    def on_chunk_complete(self) -> None:
        chunk = self._chunk
        if chunk:  # not the last, empty one
            self._ready.append(chunk[0] if len(chunk) == 1 else b"".join(chunk))
            self._chunk = []

    def on_message_complete(self) -> None:
        self.body_done = True
        if not self._parser.should_keep_alive():
            self._unfit = True

    def _break(self, failure: str) -> None:
        self.failure = failure
        self.ended = True
        if self._transport is not None:
            self._transport.close()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class UpstreamResponse:
    """A response whose head has arrived; the body is read on demand."""

    def __init__(
        self, pool: UpstreamPool, origin: tuple[str, int], connection: _ReplicaConnection
    ) -> None:
        self.status_code = connection.status_code
        self.headers = connection.headers
        """Header names in lower case (a repeated header keeps its last value)."""
        self._pool = pool
        self._origin = origin
        self._connection: _ReplicaConnection | None = connection
        self._done = False

    @property
    def complete(self) -> bool:
        """The whole body has been read (a response closed early never is)."""
        return self._done

    async def aread(self) -> bytes:
        """The whole body."""
        connection = self._connection
        if connection is not None and connection.body_done and not self._done:
            pieces = connection.take()  # the usual answer: all of it came with the head
            self._done = True
            await self.aclose()
        else:
            pieces = [piece async for piece in self._body(split=False)]
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def aiter_raw(self) -> AsyncIterator[bytes]:
        """The body's bytes as they arrive, chunk by chunk for chunked coding."""
        return self._body(split=True)

    def aiter_arrivals(self) -> AsyncIterator[bytes]:
        """The body's bytes as they arrive: for chunked coding, the data of every chunk that
        arrived together (in one read from the socket, or while the reader was busy),
        joined."""
        return self._body(split=False)

    async def _body(self, *, split: bool) -> AsyncIterator[bytes]:
        connection = self._connection
        if connection is None or self._done:
            return
        headers = self.headers
        until_end = not connection.body_done and "content-length" not in headers and (
            headers.get("transfer-encoding", "").lower() != "chunked")  # fmt: skip
        if until_end:  # framed by the end of the connection: it cannot be reused
            headers["connection"] = "close"
        try:
            while True:
                if self._connection is None:  # closed by another task: what is left is lost
                    raise ConnectionError("the response was closed while being read")
                if pieces := connection.take():
                    if split:
                        for piece in pieces:
                            yield piece
                    else:
                        yield pieces[0] if len(pieces) == 1 else b"".join(pieces)
                    continue  # more may have come while the consumer had these
                if connection.body_done:
                    break
                if connection.ended:
                    if until_end and connection.failure is None:
                        break
                    raise ConnectionError(connection.failure or "closed mid-answer")
                await connection.wait()
        except ConnectionError as exc:
            await self.aclose()
            if connection.deadline.expired:
                raise UpstreamTimeout("the replica stopped sending") from None
            raise UpstreamError(f"the replica broke the answer: {exc}") from None
        except BaseException:  # cancelled while waiting: the rest will never be read
            await self.aclose()
            raise
        self._done = True
        await self.aclose()

    async def aclose(self) -> None:
        """Give the connection back (body fully read, keep-alive) or close it. Idempotent.
        Called by another task while one reads the body, the read fails (UpstreamError)."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        if self._done and self.headers.get("connection", "").lower() != "close":
            self._pool._give_back(self._origin, connection)
        else:
            connection.close()


class UpstreamPool:
    """Keep-alive connections per origin (``host``, ``port``)."""

    def __init__(
        self,
        *,
        connect_timeout_s: float,
        read_timeout_s: float,
        max_idle_per_origin: int = 256,
        idle_expiry_s: float = 30.0,
    ) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.max_idle_per_origin = max_idle_per_origin
        self.idle_expiry_s = idle_expiry_s
        self._idle: dict[tuple[str, int], deque[_ReplicaConnection]] = {}
        self._origins: dict[str, tuple[str, int, str]] = {}

    async def post(
        self, base_url: str, path: str, body: bytes, headers: Mapping[str, str]
    ) -> UpstreamResponse:
        """POST ``body`` to ``base_url + path``; returns once the response head arrived."""
        host, port, host_header = self._origin(base_url)
        fields = "".join([f"{name}: {value}\r\n" for name, value in headers.items()])
        head = f"POST {path} HTTP/1.1\r\nhost: {host_header}\r\ncontent-length: {len(body)}\r\n"
        request = (head + fields + "\r\n").encode() + body
        origin = (host, port)
        connection = self._take_idle(origin)
        if connection is not None:
            try:
                return await self._exchange(origin, connection, request)
            except UpstreamConnectError:
                pass  # the replica closed the idle connection: once more on a new one
        return await self._exchange(origin, await self._connect(origin), request)

    async def aclose(self) -> None:
        for idle in self._idle.values():
            while idle:
                idle.popleft().close()

    def _origin(self, base_url: str) -> tuple[str, int, str]:
        known = self._origins.get(base_url)
        if known is None:
            authority = base_url.split("://", 1)[-1].split("/", 1)[0]
            host, _, port = authority.rpartition(":")
            if not host or not port.isdigit():
                host, port = authority, "80"
            known = self._origins[base_url] = (host.strip("[]"), int(port), authority)
        return known

    def _take_idle(self, origin: tuple[str, int]) -> _ReplicaConnection | None:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            connection = idle.pop()  # the most recently used: least likely closed
            if now - connection.idle_since < self.idle_expiry_s and connection.reusable:
                return connection
            connection.close()
        return None

    def _give_back(self, origin: tuple[str, int], connection: _ReplicaConnection) -> None:
        idle = self._idle.get(origin)
        if idle is None:
            idle = self._idle[origin] = deque()
        if len(idle) >= self.max_idle_per_origin or not connection.reusable:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        idle.append(connection)

    async def _connect(self, origin: tuple[str, int]) -> _ReplicaConnection:
        loop = asyncio.get_running_loop()
        read_timeout_s = self.read_timeout_s
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                _, connection = await loop.create_connection(
                    lambda: _ReplicaConnection(read_timeout_s), *origin
                )
        except TimeoutError:
            raise UpstreamConnectError("timed out connecting") from None
        except OSError as exc:
            raise UpstreamConnectError(f"{type(exc).__name__}: {exc}") from None
        return connection

    async def _exchange(
        self, origin: tuple[str, int], connection: _ReplicaConnection, request: bytes
    ) -> UpstreamResponse:
        try:
            connection.send(request)
            while not connection.head_done and not connection.ended:
                await connection.wait()
        except ConnectionError:
            pass
        except BaseException:  # cancelled while waiting: the answer will never be read
            connection.close()
            raise
        if connection.head_done:
            return UpstreamResponse(self, origin, connection)
        failure = connection.failure or "the replica closed the connection"
        connection.close()
        if connection.deadline.expired:
            raise UpstreamTimeout("the replica sent no answer in time")
        if connection.received:
            raise UpstreamError(f"the replica broke the answer's head: {failure}")
        raise UpstreamConnectError(failure)
