"""The replica-hop HTTP/1.1 client against scripted raw-socket servers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress

import pytest

from aiforge.gateway.upstream import _STREAM_LIMIT as UPSTREAM_BUFFER
from aiforge.gateway.upstream import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamPool,
    UpstreamResponse,
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


Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def replica(serve: Serve) -> AsyncIterator[str]:
    """A replica whose every connection ``serve`` handles; yields its URL."""

    async def guarded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with suppress(ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            await serve(reader, writer)
        writer.close()

    server = await asyncio.start_server(guarded, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await asyncio.sleep(0.01)


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)  # fmt: skip
    return head + await reader.readexactly(length)


CHUNKED_ANSWER = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n"
                  b"0\r\nx-trailer: 1\r\n\r\n")  # fmt: skip


@pytest.mark.parametrize("answer", [CHUNKED_ANSWER, sized(b'{"byte":"by byte"}')])
async def test_an_answer_sent_a_byte_at_a_time_reads_as_one_sent_at_once(answer: bytes) -> None:
    head, _, body = answer.partition(b"\r\n\r\n")
    expected = [b"hello", b" world"] if b"chunked" in head else [body]
    connections = 0

    async def one_byte_at_a_time(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        nonlocal connections
        connections += 1
        while True:
            await read_request(reader)
            for at in range(len(answer)):  # the head too arrives in many reads
                writer.write(answer[at : at + 1])
                await writer.drain()
                await asyncio.sleep(0.001)

    async with replica(one_byte_at_a_time) as url:
        upstream = pool()
        response = await upstream.post(url, "/", b"{}", {})
        assert response.status_code == 200
        assert b"".join([part async for part in response.aiter_raw()]) == b"".join(expected)
        assert response.complete
        assert "x-trailer" not in response.headers  # a trailer is no header
        again = await upstream.post(url, "/", b"{}", {})
        assert await again.aread() == b"".join(expected)
        await upstream.aclose()
    assert connections == 1


async def test_chunks_come_whole_however_the_bytes_are_split() -> None:
    async def split_inside_chunks(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await read_request(reader)
        cuts = (60, CHUNKED_ANSWER.index(b"llo"), CHUNKED_ANSWER.index(b"rld"))  # in the data
        for start, end in zip((0, *cuts), (*cuts, None), strict=True):
            part = CHUNKED_ANSWER[start:end]
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(0.02)

    async with replica(split_inside_chunks) as url:
        upstream = pool()
        response = await upstream.post(url, "/", b"", {})
        assert [part async for part in response.aiter_raw()] == [b"hello", b" world"]
        await upstream.aclose()


async def test_a_slow_reader_pauses_the_replica_and_reading_resumes_when_it_catches_up() -> None:
    piece, pieces = b"x" * (256 << 10), 384  # 96 MiB: more than the kernel's buffers hold
    sent = 0

    async def fast(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
        for _ in range(pieces):
            writer.write(chunk)
            await writer.drain()
            sent += len(piece)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        await reader.read()  # until the client closes

    async with replica(fast) as url:
        upstream = pool()
        response = await upstream.post(url, "/", b"", {})
        stream = response.aiter_raw()
        received = len(await anext(stream))
        await asyncio.sleep(0.5)  # the consumer is busy; the replica keeps sending
        connection = response._connection
        assert connection is not None
        assert connection._paused
        assert connection._waiting <= UPSTREAM_BUFFER + len(piece)  # bounded in the gateway
        assert sent < len(piece) * pieces  # so the replica could not send it all
        async for part in stream:  # a chunk cut at the pause comes in two pieces
            assert part == b"x" * len(part)
            received += len(part)
            assert connection._waiting <= UPSTREAM_BUFFER + len(piece)
        assert received == len(piece) * pieces
        assert response.complete
        await upstream.aclose()


async def test_a_pooled_connection_that_dies_on_use_is_replaced_once() -> None:
    requests = 0

    async def drops_the_second(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal requests
        while True:
            await read_request(reader)
            requests += 1
            if requests in (2, 4, 5):  # reads the request, then hangs up without a byte
                return
            writer.write(sized(b"ok"))

    async with replica(drops_the_second) as url:
        upstream = pool()
        assert await (await upstream.post(url, "/", b"", {})).aread() == b"ok"
        assert await (await upstream.post(url, "/", b"", {})).aread() == b"ok"  # 2 died, 3 ok
        assert requests == 3
        with pytest.raises(UpstreamConnectError):  # once: 4 died pooled, 5 died fresh
            await upstream.post(url, "/", b"", {})
        assert requests == 5
        await upstream.aclose()


async def test_bytes_after_the_answer_or_connection_close_keep_it_from_the_pool() -> None:
    answers = [
        CHUNKED_ANSWER + b"HTTP/1.1 200 OK\r\n",  # more than the answer
        sized(b"ok") + b"junk",
        sized(b"ok").replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"),
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",  # HTTP/1.0: no keep-alive
    ]
    connections = 0

    async def answer_all(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while True:
            await read_request(reader)
            writer.write(answers[connections - 1] if connections <= len(answers) else sized(b""))

    async with replica(answer_all) as url:
        upstream = pool()
        for expected in (b"hello world", b"ok", b"ok", b"ok", b""):
            response = await upstream.post(url, "/", b"", {})
            assert await response.aread() == expected
            await asyncio.sleep(0.02)
        await upstream.aclose()
    assert connections == 5


async def test_closing_a_response_another_task_reads_fails_that_read() -> None:
    async def stalls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nab\r\n")
        await asyncio.sleep(0.05)
        writer.write(b"2\r\ncd\r\n0\r\n\r\n")
        await reader.read()

    async def everything(response: UpstreamResponse) -> list[bytes]:
        return [part async for part in response.aiter_arrivals()]

    async with replica(stalls) as url:
        upstream = pool()
        response = await upstream.post(url, "/", b"", {})
        reading = asyncio.create_task(everything(response))
        await asyncio.sleep(0.02)  # the reader waits for the next bytes
        await response.aclose()
        with pytest.raises(UpstreamError):
            await reading
        assert not response.complete
        await response.aclose()  # idempotent

        response = await upstream.post(url, "/", b"", {})
        arrivals = response.aiter_arrivals()
        assert await anext(arrivals) == b"ab"
        await asyncio.sleep(0.1)  # the answer's end arrives meanwhile, unread
        await response.aclose()
        with pytest.raises(UpstreamError):  # what was not read is lost: never "complete"
            await anext(arrivals)
        assert not response.complete
        await upstream.aclose()


async def test_a_request_cancelled_before_its_head_closes_the_connection() -> None:
    closed = asyncio.Event()

    async def never_answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await reader.read()  # returns once the client closed the connection
        closed.set()

    async with replica(never_answers) as url:
        upstream = pool()
        waiting = asyncio.create_task(upstream.post(url, "/", b"", {}))
        await asyncio.sleep(0.05)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await asyncio.wait_for(closed.wait(), 2.0)
        await upstream.aclose()


async def test_the_read_timeout_counts_only_waits_not_time_in_the_pool() -> None:
    async def slow_second(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            await asyncio.sleep(0.1)
            writer.write(sized(b"ok"))

    async with replica(slow_second) as url:
        upstream = pool(read_timeout_s=0.25)
        assert await (await upstream.post(url, "/", b"", {})).aread() == b"ok"
        await asyncio.sleep(0.6)  # idle past the timeout, the timer firing meanwhile
        assert await (await upstream.post(url, "/", b"", {})).aread() == b"ok"
        await upstream.aclose()


@pytest.mark.parametrize(
    "framing",
    [b"zz\r\nok\r\n0\r\n\r\n", b"2\r\nokXY0\r\n\r\n", b"-2\r\nok\r\n0\r\n\r\n"],
    ids=["size-not-hex", "chunk-without-crlf", "negative-size"],
)
async def test_a_chunked_body_with_bad_framing_is_an_upstream_error(framing: bytes) -> None:
    answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + framing
    async with raw_server(lambda _: answer) as stats:
        upstream = pool()
        response = await upstream.post(f"http://127.0.0.1:{stats['port']}", "/", b"", {})
        with pytest.raises(UpstreamError):
            await response.aread()
        assert not response.complete
        await upstream.aclose()
