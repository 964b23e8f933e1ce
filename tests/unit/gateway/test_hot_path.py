"""The request path's cheaper parts behave as the plain ones did: chunks read as they arrive,
one read timer per exchange, the usage member found from its key, and the server's inference
fast path in front of the app."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from gateway_fakes import MODEL, Gateway
from starlette.datastructures import Headers

from aiforge.gateway.metering import _USAGE_MEMBER, without_usage_member
from aiforge.gateway.request import pick_headers
from aiforge.gateway.request_id import HEADER, InferenceFastPath
from aiforge.gateway.upstream import UpstreamPool, UpstreamTimeout
from aiforge.testing.server import running_app


@contextlib.asynccontextmanager
async def scripted(parts: list[tuple[float, bytes]]) -> AsyncIterator[str]:
    """A replica that answers every request by writing ``parts`` after their delays."""

    writers: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:  # until the client closes the connection
                await reader.readuntil(b"\r\n\r\n")
                for delay, data in parts:
                    await asyncio.sleep(delay)
                    writer.write(data)
                    await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        for writer in writers:
            writer.close()
        await asyncio.sleep(0.01)


HEAD = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"


async def test_arrivals_join_the_chunks_that_came_together_and_raw_keeps_them_apart() -> None:
    body = b"2\r\nab\r\n2\r\ncd\r\n"
    async with scripted([(0, HEAD + body), (0.1, b"2\r\nef\r\n0\r\n\r\n")]) as url:
        upstream = UpstreamPool(connect_timeout_s=2.0, read_timeout_s=2.0)
        response = await upstream.post(url, "/", b"", {})
        assert [part async for part in response.aiter_arrivals()] == [b"abcd", b"ef"]
        assert response.complete
        response = await upstream.post(url, "/", b"", {})
        assert [part async for part in response.aiter_raw()] == [b"ab", b"cd", b"ef"]
        await upstream.aclose()


async def test_the_read_timeout_bounds_each_wait_not_the_whole_answer() -> None:
    steady = [(0, HEAD)] + [(0.15, b"1\r\nx\r\n")] * 5 + [(0, b"0\r\n\r\n")]
    async with scripted(steady) as url:  # 0.75 s in all, never 0.3 s without a byte
        upstream = UpstreamPool(connect_timeout_s=2.0, read_timeout_s=0.3)
        response = await upstream.post(url, "/", b"", {})
        assert await response.aread() == b"xxxxx"
        await upstream.aclose()
    async with scripted([(0, HEAD + b"1\r\nx\r\n")]) as url:  # then nothing
        upstream = UpstreamPool(connect_timeout_s=2.0, read_timeout_s=0.3)
        response = await upstream.post(url, "/", b"", {})
        with pytest.raises(UpstreamTimeout):
            await response.aread()
        await upstream.aclose()
    async with scripted([]) as url:  # no head at all
        upstream = UpstreamPool(connect_timeout_s=2.0, read_timeout_s=0.3)
        with pytest.raises(UpstreamTimeout):
            await upstream.post(url, "/", b"", {})
        await upstream.aclose()


@pytest.mark.parametrize(
    "event",
    [
        b'data: {"id":"x","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}',
        b'data: {"usage":{"a":1,"d":{"c":2}},"id":"x"}',
        b'data: {"id":"x", \n "usage": {"a":1},"z":[1]}',
        b'data: {"id":"x","usage":{"a":{"b":{"c":1}}},"z":1}',
        b'data: {"id":"x","m":"a,\\"usage\\": {}","usage":{"a":1}}',
        b'data: {"id":"x"}',
    ],
)
def test_the_usage_member_is_removed_as_a_search_from_the_start_would(event: bytes) -> None:
    stripped, found = _USAGE_MEMBER.subn(b"", event, count=1)
    if found:
        assert without_usage_member(event) == stripped
    else:  # deeper than the pattern: the JSON fallback
        data = orjson.loads(event.removeprefix(b"data: "))
        data.pop("usage", None)
        assert without_usage_member(event) == b"data: " + orjson.dumps(data)


async def test_the_fast_path_answers_inference_and_passes_the_rest_to_the_app(
    gateway: Gateway,
) -> None:
    body: dict[str, Any] = {"model": MODEL, "prompt": "a b c", "stream": True}
    async with (
        running_app(InferenceFastPath(gateway.app)) as url,
        httpx.AsyncClient(base_url=url, headers=gateway.headers) as client,
    ):
        streamed = await client.post("/v1/chat/completions", json=body)
        refused = await client.post("/v1/chat/completions", json=body, headers={
            "authorization": "Bearer sk-wrong"})  # fmt: skip
        models = await client.get("/v1/models")
        health = await client.get("/health")
    assert streamed.status_code == 200
    assert streamed.text.endswith("data: [DONE]\n\n")
    assert streamed.headers[HEADER].startswith("req-")
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "invalid_api_key"
    assert refused.headers[HEADER].startswith("req-")
    assert models.status_code == 200
    assert [m["id"] for m in models.json()["data"]] == [MODEL]
    assert models.headers[HEADER].startswith("req-")
    assert health.status_code == 200
    (event,) = await gateway.usage.wait_for(1)
    assert event.request_id == streamed.headers[HEADER]
    assert event.completion_tokens == 3


async def test_a_stream_the_client_leaves_through_the_fast_path_is_metered_once(
    gateway: Gateway,
) -> None:
    body = {"model": MODEL, "prompt": " ".join(["w"] * 50), "stream": True, "delay_s": 0.05}
    received = 0
    async with (
        running_app(InferenceFastPath(gateway.app)) as url,
        httpx.AsyncClient(base_url=url, headers=gateway.headers) as client,
        client.stream("POST", "/v1/chat/completions", json=body) as response,
    ):
        async for line in response.aiter_lines():
            if '"content":"w ' in line:
                received += 1
                if received == 3:
                    break
    (event,) = await gateway.usage.wait_for(1)
    assert event.cancelled
    assert 3 <= event.completion_tokens <= 5
    await asyncio.sleep(0.2)
    assert len(gateway.usage.events) == 1
    assert len(gateway.admission.settled) == 1
    assert gateway.fleet.directory.in_flight(MODEL, "r0") == 0


def test_picked_headers_answer_as_starlette_headers_do() -> None:
    raw = [(b"host", b"x"), (b"authorization", b"Bearer a"), (b"x-session-id", b"s\xe9"),
           (b"authorization", b"Bearer b"), (b"traceparent", b"00-1")]  # fmt: skip
    picked = pick_headers(raw, {"authorization", "x-session-id", "traceparent", "tracestate"})
    headers = Headers(raw=raw)
    assert picked == {name: headers[name] for name in ("authorization", "x-session-id",
                                                       "traceparent")}  # fmt: skip
    assert picked["authorization"] == "Bearer a"
