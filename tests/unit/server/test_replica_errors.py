"""Bad input gets OpenAI's error envelope with the right status and ``param``."""

from __future__ import annotations

from typing import Any

import pytest

from aiforge.testing.openai_schema import assert_conforms

MODEL = "qwen3-test"
MESSAGES = [{"role": "user", "content": "Hi"}]


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"temperature": 3}, "temperature"),
        ({"n": 0}, "n"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"tool_choice": "required"}, "tool_choice"),
    ],
)
async def test_invalid_parameters(replica: Any, extra: dict[str, Any], param: str) -> None:
    async with replica() as (client, _):
        response = await client.post(
            "/v1/chat/completions", json={"model": MODEL, "messages": MESSAGES, **extra}
        )
    assert response.status_code == 400
    assert_conforms("ErrorResponse", response.json())
    assert response.json()["error"]["param"] == param


async def test_unknown_model_malformed_json_and_too_large(replica: Any) -> None:
    async with replica(max_body_bytes=2000) as (client, _):
        missing = await client.post(
            "/v1/chat/completions", json={"model": "x", "messages": MESSAGES}
        )
        malformed = await client.post(
            "/v1/chat/completions", content=b"{nope", headers={"content-type": "application/json"}
        )
        large = await client.post(
            "/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": "x" * 5000}]},
        )
        still_fine = await client.post(
            "/v1/chat/completions", json={"model": MODEL, "messages": MESSAGES}
        )
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "model_not_found")
    assert malformed.status_code == 400
    assert malformed.json()["error"]["code"] == "invalid_json"
    assert large.status_code == 413
    for response in (missing, malformed, large):
        assert_conforms("ErrorResponse", response.json())
    assert still_fine.status_code == 200


async def test_context_length_exceeded_names_both_numbers(replica: Any) -> None:
    async with replica(max_model_len=64) as (client, _):
        response = await client.post(
            "/v1/chat/completions", json={"model": MODEL, "messages": MESSAGES, "max_tokens": 100}
        )
    error = response.json()["error"]
    assert response.status_code == 400
    assert error["code"] == "context_length_exceeded"
    assert "maximum context length is 64 tokens" in error["message"]
    assert "100 in the completion" in error["message"]


async def test_engine_failure_is_500_and_replica_keeps_serving(replica: Any) -> None:
    async with replica(fail_with=RuntimeError("boom")) as (client, engine):
        failed = await client.post(
            "/v1/chat/completions", json={"model": MODEL, "messages": MESSAGES}
        )
        engine.fail_with = None
        ok = await client.post("/v1/chat/completions", json={"model": MODEL, "messages": MESSAGES})
    assert failed.status_code == 500
    assert "boom" in failed.json()["error"]["message"]
    assert ok.status_code == 200


async def test_completions_logprobs_echo_and_suffix(replica: Any) -> None:
    async with replica(text=" world, again") as (client, _):
        result = await client.post(
            "/v1/completions", json={"model": MODEL, "prompt": ["Hello", "Bye"], "logprobs": 1}
        )
        echoed = await client.post(
            "/v1/completions", json={"model": MODEL, "prompt": "Hello", "echo": True}
        )
        suffix = await client.post(
            "/v1/completions", json={"model": MODEL, "prompt": "a", "suffix": "b"}
        )
    body = result.json()
    assert_conforms("CreateCompletionResponse", body)
    assert [c["text"] for c in body["choices"]] == [" world, again"] * 2
    logprobs = body["choices"][0]["logprobs"]
    assert (
        len(logprobs["tokens"]) == len(logprobs["token_logprobs"]) == len(logprobs["text_offset"])
    )
    assert echoed.json()["choices"][0]["text"] == "Hello world, again"
    assert suffix.status_code == 400
    assert suffix.json()["error"]["param"] == "suffix"


async def test_embeddings(replica: Any) -> None:
    async with replica(embedding_dim=16) as (client, _):
        result = await client.post("/v1/embeddings", json={"model": MODEL, "input": ["a", "b c"]})
        short = await client.post(
            "/v1/embeddings", json={"model": MODEL, "input": "a", "dimensions": 4}
        )
    body = result.json()
    assert_conforms("CreateEmbeddingResponse", body)
    assert [len(d["embedding"]) for d in body["data"]] == [16, 16]
    vector = short.json()["data"][0]["embedding"]
    assert len(vector) == 4
    assert abs(sum(x * x for x in vector) - 1) < 1e-6


async def test_embeddings_on_a_chat_model_is_400(replica: Any) -> None:
    async with replica() as (client, _):
        response = await client.post("/v1/embeddings", json={"model": MODEL, "input": "a"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "model"
