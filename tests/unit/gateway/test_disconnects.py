"""Disconnects and shutdown on the request path (issue 7, item 8), over real sockets.

A client that leaves a non-streamed request cancels it upstream and is recorded as cancelled;
one that leaves mid-upload is a 499, not a 500 with a traceback; a draining gateway lets
requests finish for the grace period, then ends streams with an error event and the others
with a 503, each recorded once.
"""

from __future__ import annotations

import asyncio
import logging
import time

import httpx
import orjson
import pytest
from gateway_fakes import KEY, MODEL, Gateway

from aiforge.gateway.handler import OpenAIHandler
from aiforge.gateway.request import CHARS_PER_TOKEN


async def test_a_client_that_leaves_a_non_streamed_request_cancels_it(gateway: Gateway) -> None:
    body = {"model": MODEL, "prompt": "a b c", "head_delay_s": 30}
    raw = orjson.dumps(body)
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post(
                "/v1/chat/completions",
                content=raw,
                headers={"content-type": "application/json"},
                timeout=0.5,
            )
    (event,) = await gateway.usage.wait_for(1)
    assert time.monotonic() - started < 5, "the gateway waited for the replica's answer"
    assert (event.status_code, event.cancelled, event.error_type) == (499, True, "cancelled")
    assert event.prompt_tokens == -(-len(raw) // CHARS_PER_TOKEN)  # the prompt estimate
    assert event.completion_tokens == 0
    ((ticket, spent),) = gateway.admission.settled
    assert spent == ticket.reserved_tokens  # the reservation is kept as the charge
    assert gateway.fleet.directory.in_flight(MODEL, "r0") == 0
    for _ in range(200):  # the replica saw its connection close (and would abort)
        if gateway.replica_app.state.left:
            break
        await asyncio.sleep(0.01)
    assert gateway.replica_app.state.left == [event.request_id]


async def test_a_client_that_leaves_while_the_body_arrives_is_cancelled(gateway: Gateway) -> None:
    body = {"model": MODEL, "prompt": " ".join(["w"] * 40), "delay_s": 0.5}
    async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post("/v1/chat/completions", json=body, timeout=0.5)
    (event,) = await gateway.usage.wait_for(1)
    assert (event.status_code, event.cancelled) == (499, True)
    assert gateway.fleet.directory.in_flight(MODEL, "r0") == 0


async def test_a_client_that_drops_mid_upload_is_a_499_without_traceback(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    host, port = gateway.url.removeprefix("http://").split(":")
    _, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n"
        b"authorization: Bearer " + KEY.encode() + b"\r\ncontent-length: 1000\r\n\r\n"
        b'{"model": "tiny", "messages": ['
    )
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.close()
    await writer.wait_closed()
    (event,) = await gateway.usage.wait_for(1)
    assert (event.status_code, event.cancelled, event.error_type) == (499, True, "cancelled")
    await asyncio.sleep(0.1)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_drain_lets_requests_finish_then_ends_the_rest(gateway: Gateway) -> None:
    handler: OpenAIHandler = gateway.app.state.handler
    endless = {"model": MODEL, "prompt": " ".join(["w"] * 400), "stream": True, "delay_s": 0.05}
    waiting = {"model": MODEL, "prompt": "a b", "head_delay_s": 60}
    quick = {"model": MODEL, "prompt": "a b c", "stream": True, "delay_s": 0.1}
    async with httpx.AsyncClient(
        base_url=gateway.url, headers=gateway.headers, timeout=30
    ) as client:

        async def streamed(body: dict[str, object]) -> str:
            async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                assert response.status_code == 200
                return (await response.aread()).decode()

        running = [
            asyncio.create_task(streamed(endless)),
            asyncio.create_task(client.post("/v1/chat/completions", json=waiting)),
            asyncio.create_task(streamed(quick)),
        ]
        for _ in range(300):
            if len(gateway.usage.opened) == 3:
                break
            await asyncio.sleep(0.01)
        started = time.monotonic()
        draining = asyncio.create_task(handler.drain(grace_s=1.0))
        await asyncio.sleep(0.1)
        refused = await client.post("/v1/chat/completions", json={"model": MODEL, "prompt": "x"})
        await draining
        assert time.monotonic() - started < 2.5
        endless_text, waited, quick_text = await asyncio.gather(*running)
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "shutting_down"
    assert isinstance(waited, httpx.Response)
    assert waited.status_code == 503
    assert waited.json()["error"]["code"] == "shutting_down"
    assert isinstance(quick_text, str)
    assert quick_text.rstrip().endswith("data: [DONE]")
    assert isinstance(endless_text, str)
    last = endless_text.strip().split("\n\n")[-1]
    assert orjson.loads(last.removeprefix("data: "))["error"]["code"] == "shutting_down"
    events = await gateway.usage.wait_for(4)
    assert sorted(e.status_code for e in events) == [200, 503, 503, 503]
    assert len({e.request_id for e in events}) == 4
    assert gateway.fleet.directory.in_flight(MODEL, "r0") == 0
