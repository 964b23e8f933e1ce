"""A small pooled HTTP/1.1 client for the gateway → replica hop.

The hop is the gateway's hot path, and a general client (``httpx``: request and response
models, a connection-pool state machine, h11 events) cost several times more than the rest
of the gateway together. A replica is a known peer on a local network speaking plain
HTTP/1.1, so this client does only that: one keep-alive connection per request from a pool
per origin, the request written with one ``write``, the response head parsed by hand and
the body framed by ``Content-Length``, chunked transfer coding, or the connection's end.

Contract: :meth:`UpstreamPool.post` returns an :class:`UpstreamResponse` once the status
line and headers arrived; the caller reads it (:meth:`UpstreamResponse.aread` or
:meth:`UpstreamResponse.aiter_raw`) and must :meth:`UpstreamResponse.aclose` it. A fully
read response gives its connection back to the pool; one closed early closes it. Errors
are :class:`UpstreamError`; :class:`UpstreamConnectError` means the replica cannot have
started on the request (safe to retry elsewhere). A pooled connection the replica closed
while idle is detected on use and replaced once, transparently.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Mapping

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
    __slots__ = ("idle_since", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class UpstreamResponse:
    """A response whose head has arrived; the body is read on demand."""

    def __init__(
        self,
        pool: UpstreamPool,
        origin: tuple[str, int],
        connection: _Connection,
        status_code: int,
        headers: dict[str, str],
        read_timeout_s: float,
    ) -> None:
        self.status_code = status_code
        self.headers = headers
        """Header names in lower case (a repeated header keeps its last value)."""
        self._pool = pool
        self._origin = origin
        self._connection: _Connection | None = connection
        self._timeout = read_timeout_s
        self._done = False

    @property
    def complete(self) -> bool:
        """The whole body has been read (a response closed early never is)."""
        return self._done

    async def aread(self) -> bytes:
        """The whole body."""
        return b"".join([part async for part in self.aiter_raw()])

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        """The body's bytes as they arrive (chunk by chunk for chunked coding)."""
        connection = self._connection
        if connection is None or self._done:
            return
        reader = connection.reader
        try:
            length = self.headers.get("content-length")
            if self.headers.get("transfer-encoding", "").lower() == "chunked":
                while chunk := await self._chunk(reader):
                    yield chunk
            elif length is not None:
                if int(length):
                    async with asyncio.timeout(self._timeout):
                        yield await reader.readexactly(int(length))
            else:  # framed by the end of the connection: it cannot be reused
                self.headers["connection"] = "close"
                while part := await self._read(reader.read(65536)):
                    yield part
        except TimeoutError:  # before OSError: TimeoutError is one
            await self.aclose()
            raise UpstreamTimeout("the replica stopped sending") from None
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            await self.aclose()
            raise UpstreamError(f"{type(exc).__name__}: {exc}") from None
        self._done = True
        await self.aclose()

    async def _chunk(self, reader: asyncio.StreamReader) -> bytes:
        line = await self._read(reader.readuntil(_LINE_END))
        size = int(line.split(b";", 1)[0], 16)
        if size == 0:
            while await self._read(reader.readuntil(_LINE_END)) != _LINE_END:
                pass  # trailer fields
            return b""
        data = await self._read(reader.readexactly(size + 2))
        return data[:-2]

    async def _read(self, pending: Awaitable[bytes]) -> bytes:
        async with asyncio.timeout(self._timeout):
            return await pending

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
        return _Connection(reader, writer)

    async def _exchange(
        self, origin: tuple[str, int], connection: _Connection, request: bytes
    ) -> UpstreamResponse:
        try:
            connection.writer.write(request)
            async with asyncio.timeout(self.read_timeout_s):
                head = await connection.reader.readuntil(_HEAD_END)
        except asyncio.IncompleteReadError as exc:
            connection.close()
            if exc.partial:
                raise UpstreamError("the replica closed the connection mid-answer") from None
            raise UpstreamConnectError("the replica closed the connection") from None
        except TimeoutError:  # before OSError: TimeoutError is one
            connection.close()
            raise UpstreamTimeout("the replica sent no answer in time") from None
        except (OSError, asyncio.LimitOverrunError) as exc:
            connection.close()
            raise UpstreamConnectError(f"{type(exc).__name__}: {exc}") from None
        except BaseException:  # cancelled while waiting: the answer will never be read
            connection.close()
            raise
        try:
            status, headers = _parse_head(head)
        except UpstreamError:
            connection.close()
            raise
        return UpstreamResponse(self, origin, connection, status, headers, self.read_timeout_s)


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
