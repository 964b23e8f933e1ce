"""A small pooled HTTP/1.1 client for the gateway → replica hop.

The hop is the gateway's hot path, and a general client (``httpx``: request and response
models, a connection-pool state machine, h11 events) cost several times more than the rest
of the gateway together. A replica is a known peer on a local network speaking plain
HTTP/1.1, so this client does only that: one keep-alive connection per request from a pool
per origin, the request written with one ``write``, the response head parsed by hand and
the body framed by ``Content-Length``, chunked transfer coding, or the connection's end.

Contract: :meth:`UpstreamPool.post` returns an :class:`UpstreamResponse` once the status
line and headers arrived; the caller reads it (:meth:`UpstreamResponse.aread`,
:meth:`UpstreamResponse.aiter_raw` chunk by chunk, or :meth:`UpstreamResponse.aiter_arrivals`
as it arrives) and must :meth:`UpstreamResponse.aclose` it. A fully read response gives its
connection back to the pool; one closed early closes it. Errors are :class:`UpstreamError`;
:class:`UpstreamConnectError` means the replica cannot have started on the request (safe to
retry elsewhere). A pooled connection the replica closed while idle is detected on use and
replaced once, transparently. The read timeout bounds every wait for the replica's next
bytes (the head, then each read of the body).

Costs, since a stream pays them per event: a chunked body is decoded from whatever one
socket read brought (:class:`ChunkedDecoder`), not with two awaited reads per chunk, and the
read timeout is one timer per pooled connection (:class:`_ReadDeadline`) that re-arms itself
only when it fires, not a timer made and cancelled around every read.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

_HEAD_END = b"\r\n\r\n"
_LINE_END = b"\r\n"
_STREAM_LIMIT = 1 << 20
"""Longest header block or chunk-size line accepted from a replica."""


class UpstreamError(Exception):
    """The replica could not be reached or broke HTTP/1.1 while answering."""


class UpstreamConnectError(UpstreamError):
    """No request bytes can have reached the replica's application (refused, timed out
    connecting, or the connection died before any response byte)."""


class UpstreamTimeout(UpstreamError):
    """The replica took longer than the read timeout to send the next bytes."""


class _Connection:
    __slots__ = ("deadline", "idle_since", "reader", "writer")

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, read_timeout_s: float
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0
        self.deadline = _ReadDeadline(read_timeout_s, self._close_writer)
        """Bounds every read on this connection (an expired one is closed, never reused)."""

    def close(self) -> None:
        self.deadline.cancel()
        self._close_writer()

    def _close_writer(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class ChunkedDecoder:
    """Chunked transfer coding (RFC 9112 §7.1), decoded from bytes as they arrive. Pure.

    :meth:`feed` returns the data of every chunk the new bytes completed, in order;
    :attr:`done` is set once the last chunk and the trailer section have arrived, and
    :attr:`extra` holds any bytes after them (a replica that sent more than its answer).
    Malformed framing raises :class:`ValueError`.
    """

    __slots__ = ("_buffer", "_need", "done", "extra")

    def __init__(self) -> None:
        self._buffer = b""
        self._need = -1
        """Bytes of the current chunk's data and its CRLF still to come; -1: a size line is
        next; 0: the trailer section is being read."""
        self.done = False
        self.extra = b""

    def feed(self, data: bytes) -> list[bytes]:
        buffer = self._buffer + data if self._buffer else data
        chunks: list[bytes] = []
        at, end = 0, len(buffer)
        while not self.done:
            if self._need > 0:
                stop = at + self._need
                if stop > end:
                    break
                if buffer[stop - 2 : stop] != _LINE_END:
                    raise ValueError("a chunk does not end with CRLF")
                chunks.append(buffer[at : stop - 2])
                at, self._need = stop, -1
                continue
            line_end = buffer.find(_LINE_END, at)
            if line_end < 0:
                if end - at > _STREAM_LIMIT:
                    raise ValueError("a chunk-size or trailer line is too long")
                break
            line = buffer[at:line_end]
            at = line_end + 2
            if self._need == 0:  # trailer fields until the empty line
                self.done = not line
            else:
                try:
                    size = int(line.split(b";", 1)[0], 16)
                except ValueError:
                    size = -1
                if size < 0:
                    raise ValueError(f"a malformed chunk-size line: {line[:40]!r}")
                self._need = size + 2 if size else 0
        if self.done:
            self.extra, self._buffer = buffer[at:], b""
        else:
            self._buffer = buffer[at:]
        return chunks


class _ReadDeadline:
    """The read timeout of one connection: while a read is waiting (between :meth:`begin`
    and :meth:`end`), the replica has ``timeout_s`` to send bytes; when it does not,
    ``on_expiry`` runs (it closes the connection, so the read ends) and :attr:`expired` is
    set. One timer for the connection's life, re-armed only when it fires."""

    __slots__ = ("_handle", "_loop", "_on_expiry", "_since", "_timeout", "expired")

    def __init__(self, timeout_s: float, on_expiry: Callable[[], None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._timeout = timeout_s
        self._on_expiry = on_expiry
        self._since: float | None = None
        self.expired = False
        self._handle = self._loop.call_later(timeout_s, self._check)

    def begin(self) -> None:
        self._since = self._loop.time()

    def end(self) -> None:
        self._since = None

    def cancel(self) -> None:
        self._handle.cancel()

    def _check(self) -> None:
        now = self._loop.time()
        if self._since is None:
            self._handle = self._loop.call_at(now + self._timeout, self._check)
        elif now - self._since >= self._timeout:
            self.expired = True
            self._on_expiry()
        else:
            due = max(self._since + self._timeout, now + 0.001)
            self._handle = self._loop.call_at(due, self._check)


class UpstreamResponse:
    """A response whose head has arrived; the body is read on demand."""

    def __init__(
        self,
        pool: UpstreamPool,
        origin: tuple[str, int],
        connection: _Connection,
        status_code: int,
        headers: dict[str, str],
    ) -> None:
        self.status_code = status_code
        self.headers = headers
        """Header names in lower case (a repeated header keeps its last value)."""
        self._pool = pool
        self._origin = origin
        self._connection: _Connection | None = connection
        self._deadline = connection.deadline
        self._done = False

    @property
    def complete(self) -> bool:
        """The whole body has been read (a response closed early never is)."""
        return self._done

    async def aread(self) -> bytes:
        """The whole body."""
        return b"".join([part async for part in self._body(split=False)])

    def aiter_raw(self) -> AsyncIterator[bytes]:
        """The body's bytes as they arrive, chunk by chunk for chunked coding."""
        return self._body(split=True)

    def aiter_arrivals(self) -> AsyncIterator[bytes]:
        """The body's bytes as they arrive: for chunked coding, the data of every chunk that
        one read from the socket completed, joined (the chunks that arrived together)."""
        return self._body(split=False)

    async def _body(self, *, split: bool) -> AsyncIterator[bytes]:
        connection = self._connection
        if connection is None or self._done:
            return
        reader = connection.reader
        try:
            length = self.headers.get("content-length")
            if self.headers.get("transfer-encoding", "").lower() == "chunked":
                decoder = ChunkedDecoder()
                while not decoder.done:
                    data = await self._read(reader.read(65536))
                    if not data:
                        raise asyncio.IncompleteReadError(b"", None)
                    chunks = decoder.feed(data)
                    if not chunks:
                        continue
                    if split:
                        for chunk in chunks:
                            yield chunk
                    else:
                        yield chunks[0] if len(chunks) == 1 else b"".join(chunks)
                if decoder.extra:  # more than the answer: the connection cannot be reused
                    self.headers["connection"] = "close"
            elif length is not None:
                if int(length):
                    yield await self._read(reader.readexactly(int(length)))
            else:  # framed by the end of the connection: it cannot be reused
                self.headers["connection"] = "close"
                while part := await self._read(reader.read(65536)):
                    yield part
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            await self.aclose()
            if self._deadline.expired:
                raise UpstreamTimeout("the replica stopped sending") from None
            raise UpstreamError(f"{type(exc).__name__}: {exc}") from None
        self._done = True
        await self.aclose()

    async def _read(self, pending: Awaitable[bytes]) -> bytes:
        deadline = self._deadline
        deadline.begin()
        try:
            return await pending
        finally:
            deadline.end()

    async def aclose(self) -> None:
        """Give the connection back (body fully read, keep-alive) or close it. Idempotent.
        Called by another task while one reads the body, the read fails (UpstreamError)."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        reusable = self._done and self.headers.get("connection", "").lower() != "close"
        if reusable:
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
        self._idle: dict[tuple[str, int], deque[_Connection]] = {}
        self._origins: dict[str, tuple[str, int, bytes]] = {}

    async def post(
        self, base_url: str, path: str, body: bytes, headers: Mapping[str, str]
    ) -> UpstreamResponse:
        """POST ``body`` to ``base_url + path``; returns once the response head arrived."""
        host, port, host_header = self._origin(base_url)
        lines = [f"POST {path} HTTP/1.1\r\nhost: ".encode(), host_header,
                 f"\r\ncontent-length: {len(body)}\r\n".encode()]  # fmt: skip
        lines += [f"{name}: {value}\r\n".encode() for name, value in headers.items()]
        request = b"".join(lines) + _LINE_END + body
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

    def _origin(self, base_url: str) -> tuple[str, int, bytes]:
        known = self._origins.get(base_url)
        if known is None:
            authority = base_url.split("://", 1)[-1].split("/", 1)[0]
            host, _, port = authority.rpartition(":")
            if not host or not port.isdigit():
                host, port = authority, "80"
            known = self._origins[base_url] = (host.strip("[]"), int(port), authority.encode())
        return known

    def _take_idle(self, origin: tuple[str, int]) -> _Connection | None:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            connection = idle.pop()  # the most recently used: least likely closed
            if now - connection.idle_since < self.idle_expiry_s and not connection.reader.at_eof():
                return connection
            connection.close()
        return None

    def _give_back(self, origin: tuple[str, int], connection: _Connection) -> None:
        idle = self._idle.setdefault(origin, deque())
        if len(idle) >= self.max_idle_per_origin:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        idle.append(connection)

    async def _connect(self, origin: tuple[str, int]) -> _Connection:
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                reader, writer = await asyncio.open_connection(*origin, limit=_STREAM_LIMIT)
        except TimeoutError:
            raise UpstreamConnectError("timed out connecting") from None
        except OSError as exc:
            raise UpstreamConnectError(f"{type(exc).__name__}: {exc}") from None
        return _Connection(reader, writer, self.read_timeout_s)

    async def _exchange(
        self, origin: tuple[str, int], connection: _Connection, request: bytes
    ) -> UpstreamResponse:
        deadline = connection.deadline
        try:
            connection.writer.write(request)
            deadline.begin()
            head = await connection.reader.readuntil(_HEAD_END)
            deadline.end()
        except asyncio.IncompleteReadError as exc:
            connection.close()
            if deadline.expired:
                raise UpstreamTimeout("the replica sent no answer in time") from None
            if exc.partial:
                raise UpstreamError("the replica closed the connection mid-answer") from None
            raise UpstreamConnectError("the replica closed the connection") from None
        except (OSError, asyncio.LimitOverrunError) as exc:
            connection.close()
            if deadline.expired:
                raise UpstreamTimeout("the replica sent no answer in time") from None
            raise UpstreamConnectError(f"{type(exc).__name__}: {exc}") from None
        except BaseException:  # cancelled while waiting: the answer will never be read
            connection.close()
            raise
        try:
            status, headers = _parse_head(head)
        except UpstreamError:
            connection.close()
            raise
        return UpstreamResponse(self, origin, connection, status, headers)


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head[: -len(_HEAD_END)].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise UpstreamError(f"not an HTTP/1.1 response: {lines[0][:80]!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers
