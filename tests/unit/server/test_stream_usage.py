"""``stream_options.continuous_usage_stats`` and the ``x-request-id`` echo of the replica."""

from __future__ import annotations

from typing import Any

from aiforge.testing.fake_engine import sse_payloads

MODEL = "qwen3-test"
ClientFactory = Any
CONTINUOUS = {"include_usage": True, "continuous_usage_stats": True}


def _chunks(text: str) -> list[dict[str, Any]]:
    return [p for p in sse_payloads(text) if isinstance(p, dict)]


async def test_chat_continuous_usage_counts_up_on_every_chunk(replica: ClientFactory) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "stream": True,
            "stream_options": CONTINUOUS}  # fmt: skip
    async with replica(text="one two three four") as (client, _):
        response = await client.post("/v1/chat/completions", json=body)
    chunks = _chunks(response.text)
    assert all("usage" in c for c in chunks), chunks
    completion = [c["usage"]["completion_tokens"] for c in chunks]
    assert completion == sorted(completion)
    assert completion[0] == 0  # the role chunk: nothing generated yet
    final = chunks[-1]
    assert final["choices"] == []
    assert completion[-2] == final["usage"]["completion_tokens"] > 0
    assert {c["usage"]["prompt_tokens"] for c in chunks} == {final["usage"]["prompt_tokens"]}


async def test_completions_continuous_usage_and_plain_streams(replica: ClientFactory) -> None:
    body = {"model": MODEL, "prompt": "Hi", "stream": True, "max_tokens": 8}
    async with replica(text="alpha beta gamma") as (client, _):
        continuous = await client.post(
            "/v1/completions", json={**body, "stream_options": CONTINUOUS}
        )
        plain = await client.post("/v1/completions", json=body)
        continuous_alone = await client.post(
            "/v1/completions", json={**body, "stream_options": {"continuous_usage_stats": True}}
        )
    chunks = _chunks(continuous.text)
    assert all("usage" in c for c in chunks)
    assert chunks[-2]["usage"] == chunks[-1]["usage"]
    assert chunks[-1]["choices"] == []
    # Without include_usage the option does nothing (vLLM's rule).
    for response in (plain, continuous_alone):
        assert not any("usage" in c for c in _chunks(response.text))


async def test_replica_echoes_the_request_id(replica: ClientFactory) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]}
    async with replica() as (client, _):
        named = await client.post(
            "/v1/chat/completions", json=body, headers={"x-request-id": "req-abc"}
        )
        unnamed = await client.post("/v1/chat/completions", json=body)
        error = await client.post(
            "/v1/chat/completions", json={"model": "nope"}, headers={"x-request-id": "req-x"}
        )
    assert named.headers["x-request-id"] == "req-abc"
    assert "x-request-id" not in unnamed.headers
    assert error.status_code in (400, 404)
    assert error.headers["x-request-id"] == "req-x"
