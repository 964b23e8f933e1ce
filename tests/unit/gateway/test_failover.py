"""Failover: a replica that breaks before the client got a byte is replaced by another (same
request id, one usage record); a stream that breaks after that ends with an SSE error event
and is metered with what it had reached. The breaking replicas are raw sockets, so each way
of breaking is exact: closed before the head, mid-body, mid-stream, or a 503."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Literal

import httpx
import orjson
import pytest
from gateway_fakes import MODEL, Gateway

Breakage = Literal["before_head", "mid_body", "before_events", "mid_stream", "unavailable"]

_EVENT = (
    b'data: {"id":"x","object":"chat.completion.chunk","created":1,"model":"tiny",'
    b'"choices":[{"index":0,"delta":{"content":"w "},"finish_reason":null}],'
    b'"usage":{"prompt_tokens":7,"completion_tokens":%d,"total_tokens":%d}}\n\n'
)


@contextlib.asynccontextmanager
async def breaking_replica(how: Breakage) -> AsyncIterator[tuple[str, list[str]]]:
    """A replica that reads each request and breaks in the way ``how`` says; yields its URL
    and the request ids it saw."""
    seen: list[str] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        fields = dict(
            line.split(": ", 1) for line in head.decode().split("\r\n")[1:] if ": " in line
        )
        await reader.readexactly(int(fields.get("content-length", "0")))
        seen.append(fields.get("x-request-id", ""))
        if how == "mid_body":
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                         b"content-length: 1000\r\n\r\n{\"id\":")  # fmt: skip
        elif how == "unavailable":
            body = b'{"error":{"message":"engine down","type":"server_error"}}'
            writer.write(b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
                         b"content-length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip
        elif how in ("before_events", "mid_stream"):
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                         b"transfer-encoding: chunked\r\n\r\n")  # fmt: skip
            if how == "mid_stream":
                for sent in (1, 2):
                    event = _EVENT % (sent, 7 + sent)
                    writer.write(b"%x\r\n%s\r\n" % (len(event), event))
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        server.close()


def _use_broken_first(gateway: Gateway, url: str) -> None:
    """Round robin starts with the replica added first: make the broken one that."""
    gateway.fleet.remove("r0")
    gateway.fleet.deploy(MODEL, policy="round_robin")
    gateway.fleet.add(MODEL, "broken", url)


@pytest.mark.parametrize("how", ["before_head", "mid_body", "unavailable"])
async def test_a_non_streamed_request_fails_over(gateway: Gateway, how: Breakage) -> None:
    async with breaking_replica(how) as (url, seen):
        _use_broken_first(gateway, url)
        good = gateway.replica_app
        gateway.fleet.add(MODEL, "r0", gateway.fleet_url)
        async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers) as client:
            answer = await client.post("/v1/chat/completions", json={"model": MODEL})
    assert answer.status_code == 200, answer.text
    events = await gateway.usage.wait_for(1)
    assert [(e.status_code, e.replica) for e in events] == [(200, "r0")]
    assert seen == good.state.request_ids == [answer.headers["x-request-id"]]


@pytest.mark.parametrize("how", ["before_head", "before_events", "unavailable"])
async def test_a_stream_fails_over_before_its_first_event(gateway: Gateway, how: Breakage) -> None:
    async with breaking_replica(how) as (url, seen):
        _use_broken_first(gateway, url)
        gateway.fleet.add(MODEL, "r0", gateway.fleet_url)
        body = {"model": MODEL, "prompt": "one two three", "stream": True}
        async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers) as client:
            answer = await client.post("/v1/chat/completions", json=body)
    assert answer.status_code == 200
    assert answer.text.count('"content":"') == 4  # the role chunk and three words
    assert answer.text.endswith("data: [DONE]\n\n")
    events = await gateway.usage.wait_for(1)
    assert [(e.status_code, e.replica, e.completion_tokens) for e in events] == [(200, "r0", 3)]
    assert len(seen) == 1


async def test_a_stream_broken_mid_way_ends_with_an_error_event(gateway: Gateway) -> None:
    async with breaking_replica("mid_stream") as (url, _seen):
        _use_broken_first(gateway, url)
        gateway.fleet.add(MODEL, "r0", gateway.fleet_url)
        body = {"model": MODEL, "prompt": "one two three", "stream": True}
        async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers) as client:
            answer = await client.post("/v1/chat/completions", json=body)
    events = [line for line in answer.text.split("\n\n") if line]
    assert len(events) == 3  # two content events, then the error; no [DONE]
    error = orjson.loads(events[-1].removeprefix("data: "))["error"]
    assert error["code"] == "upstream_error"
    assert answer.headers["x-request-id"] in error["message"]
    usage = await gateway.usage.wait_for(1)
    assert [(e.status_code, e.replica, e.completion_tokens) for e in usage] == [(502, "broken", 2)]
    assert gateway.replica_app.state.request_ids == []  # not retried: the client had bytes


async def test_failover_is_bounded_and_then_answers_503(gateway: Gateway) -> None:
    async with contextlib.AsyncExitStack() as stack:
        gateway.fleet.remove("r0")
        for i in range(4):
            url, _ = await stack.enter_async_context(breaking_replica("before_head"))
            gateway.fleet.add(MODEL, f"b{i}", url)
        async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers) as client:
            answer = await client.post("/v1/chat/completions", json={"model": MODEL})
    assert answer.status_code == 503
    assert answer.json()["error"]["message"].count("the replica closed") == 3
    assert [e.status_code for e in await gateway.usage.wait_for(1)] == [503]
