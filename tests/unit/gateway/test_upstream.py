"""The replica-hop HTTP/1.1 client against scripted raw-socket servers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from aiforge.gateway.upstream import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamPool,
    UpstreamTimeout,
)
from aiforge.testing.server import free_port

Answer = Callable[[bytes], bytes | None]
"""From the request's bytes (head + body) to the raw response (None: close at once)."""


@asynccontextmanager
async def raw_server(answer: Answer, *, close_after: bool = False) -> AsyncIterator[dict[str, int]]:
    stats = {"connections": 0, "requests": 0}

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stats["connections"] += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)  # fmt: skip
                body = await reader.readexactly(length)
                stats["requests"] += 1
                response = answer(head + body)
                if response is None:
                    break
                writer.write(response)
                await writer.drain()
                if close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    stats["port"] = server.sockets[0].getsockname()[1]
    try:
        yield stats
    finally:
        server.close()


def pool(read_timeout_s: float = 5.0) -> UpstreamPool:
    return UpstreamPool(connect_timeout_s=2.0, read_timeout_s=read_timeout_s)


def sized(body: bytes, status: str = "200 OK") -> bytes:
    return f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body


async def test_content_length_answers_reuse_one_connection() -> None:
    seen: list[bytes] = []

    def answer(request: bytes) -> bytes:
        seen.append(request)
        return sized(b'{"ok":true}')

    async with raw_server(answer) as stats:
        upstream = pool()
        url = f"http://127.0.0.1:{stats['port']}"
        for _ in range(3):
            response = await upstream.post(url, "/v1/x", b"{}", {"x-request-id": "req-1"})
            assert response.status_code == 200
            assert response.headers["content-length"] == "11"
            assert await response.aread() == b'{"ok":true}'
        await upstream.aclose()
    assert stats["connections"] == 1
    assert seen[0].startswith(b"POST /v1/x HTTP/1.1\r\nhost: 127.0.0.1:")
    assert b"\r\nx-request-id: req-1\r\n" in seen[0]
    assert seen[0].endswith(b"\r\n\r\n{}")


async def test_chunked_stream_arrives_chunk_by_chunk_then_connection_is_reused() -> None:
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n")  # fmt: skip
    async with raw_server(lambda _: chunked) as stats:
        upstream = pool()
        url = f"http://127.0.0.1:{stats['port']}"
        response = await upstream.post(url, "/s", b"", {})
        assert [part async for part in response.aiter_raw()] == [b"hello", b" world"]
        again = await upstream.post(url, "/s", b"", {})
        assert await again.aread() == b"hello world"
        await upstream.aclose()
    assert stats["connections"] == 1


async def test_close_delimited_body_and_early_close_do_not_reuse() -> None:
    def answer(request: bytes) -> bytes:
        if b"/sized" in request:
            return sized(b"x" * 10)
        return b"HTTP/1.1 200 OK\r\n\r\nuntil the end"

    async with raw_server(answer, close_after=True) as stats:
        upstream = pool()
        url = f"http://127.0.0.1:{stats['port']}"
        response = await upstream.post(url, "/eof", b"", {})
        assert await response.aread() == b"until the end"
        early = await upstream.post(url, "/sized", b"", {})
        await early.aclose()  # not read: the connection cannot be reused
        await (await upstream.post(url, "/sized", b"", {})).aread()
        await upstream.aclose()
    assert stats["connections"] == 3


async def test_an_idle_connection_the_replica_closed_is_replaced() -> None:
    async with raw_server(lambda _: sized(b"ok"), close_after=True) as stats:
        upstream = pool()
        url = f"http://127.0.0.1:{stats['port']}"
        for _ in range(3):
            response = await upstream.post(url, "/", b"", {})
            assert await response.aread() == b"ok"
            await asyncio.sleep(0.05)  # the server has closed it by now
        await upstream.aclose()
    assert stats["requests"] == 3


async def test_errors_say_whether_the_replica_may_have_started() -> None:
    upstream = pool(read_timeout_s=0.2)
    with pytest.raises(UpstreamConnectError):
        await upstream.post(f"http://127.0.0.1:{free_port()}", "/", b"", {})
    async with raw_server(lambda _: None) as stats:  # accepts, then hangs up without answer
        with pytest.raises(UpstreamConnectError):
            await upstream.post(f"http://127.0.0.1:{stats['port']}", "/", b"", {})
    half = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial"
    async with raw_server(lambda _: half, close_after=True) as stats:
        response = await upstream.post(f"http://127.0.0.1:{stats['port']}", "/", b"", {})
        with pytest.raises(UpstreamError):
            await response.aread()
    async with raw_server(lambda _: b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n") as stats:
        response = await upstream.post(f"http://127.0.0.1:{stats['port']}", "/", b"", {})
        with pytest.raises(UpstreamTimeout):
            await response.aread()
    async with raw_server(lambda _: b"garbage\r\n\r\n") as stats:
        with pytest.raises(UpstreamError):
            await upstream.post(f"http://127.0.0.1:{stats['port']}", "/", b"", {})
    await upstream.aclose()
