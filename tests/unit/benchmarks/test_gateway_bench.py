"""The gateway benchmark's pure parts: its statistics, and what its fake replica sends."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from gateway_vs_litellm import Cell, percentile, render, summarize
from gateway_wire import STREAM_TOKENS, Connection, read_message, serve_replica, stream_events


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == pytest.approx(2.5)
    assert percentile([1.0, 2.0, 3.0, 4.0], 100) == 4.0
    assert percentile([7.0], 99) == 7.0


def test_rows_add_latency_against_direct_and_divide_cpu_by_requests() -> None:
    cells = {
        "direct": Cell(latencies=[0.001] * 10, wall_s=0.5),
        "aiforge": Cell(latencies=[0.0015] * 10, wall_s=1.0, cpu_s=0.004),
    }
    direct, aiforge = summarize(cells)
    assert direct["added_p50_ms"] == 0.0
    assert aiforge["added_p50_ms"] == pytest.approx(0.5)
    assert aiforge["req_per_s"] == pytest.approx(10.0)
    assert aiforge["cpu_ms_per_request"] == pytest.approx(0.4)
    assert "| aiforge | 1.500 | 1.500 | 0.500 |" in render("t", [direct, aiforge])


def test_the_stream_carries_usage_only_as_asked() -> None:
    plain = list(stream_events(include_usage=False, continuous_usage=False))
    final = list(stream_events(include_usage=True, continuous_usage=False))
    every = list(stream_events(include_usage=True, continuous_usage=True))
    assert len(plain) == STREAM_TOKENS + 2  # the role chunk, the tokens, [DONE]
    assert final[:-2] == plain[:-1]
    assert orjson.loads(final[-2].removeprefix(b"data: "))["usage"]["completion_tokens"] == 16
    assert all(b'"usage"' in event for event in every[:-1])
    assert plain[-1] == b"data: [DONE]\n\n"


async def test_the_fake_replica_streams_chunked_and_the_client_reads_it_whole() -> None:
    server = await asyncio.start_server(serve_replica, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    body = orjson.dumps({"model": "bench", "stream": True,
                         "stream_options": {"include_usage": True}})  # fmt: skip
    try:
        async with Connection(url, "/v1/chat/completions", body, None) as connection:
            _, streamed = await connection.time_one()
            connection.writer.write(b"GET /v1/models HTTP/1.1\r\nhost: x\r\n\r\n")
            head, models = await read_message(connection.reader)
    finally:
        server.close()
    assert streamed == b"".join(stream_events(include_usage=True, continuous_usage=False))
    assert head.startswith(b"HTTP/1.1 200")
    assert orjson.loads(models)["data"][0]["id"] == "bench"
