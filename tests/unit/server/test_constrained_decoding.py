"""Grammars through the real app: a fake engine samples uniformly among allowed tokens."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
import torch
from transformers import PreTrainedTokenizerBase

from aiforge.engines.server.grammar import AfterThinking, GrammarCompilerCache, GrammarConstraint
from aiforge.protocol.openai.errors import OpenAIError
from aiforge.testing.fake_engine import sse_payloads
from aiforge.testing.openai_schema import assert_conforms

MODEL = "qwen3-test"
SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 8},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 4}, "maxItems": 2},
    },
    "required": ["name", "age", "tags"],
    "additionalProperties": False,
}


def body(**extra: Any) -> dict[str, Any]:
    request: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Give me a person"}],
        "chat_template_kwargs": {"enable_thinking": False},
        "max_tokens": 400,
    }
    request.update(extra)
    return request


@pytest.mark.parametrize("seed", [1])
async def test_json_schema_output_validates(replica: Any, seed: int) -> None:
    response_format = {"type": "json_schema", "json_schema": {"name": "p", "schema": SCHEMA}}
    async with replica(text="") as (client, _):  # no script: uniform among allowed tokens
        response = await client.post(
            "/v1/chat/completions", json=body(response_format=response_format, seed=seed)
        )
    result = response.json()
    assert_conforms("CreateChatCompletionResponse", result)
    assert result["choices"][0]["finish_reason"] == "stop"
    # xgrammar lets raw control characters into strings (json.loads(strict=False) reads them).
    content = json.loads(result["choices"][0]["message"]["content"], strict=False)
    jsonschema.validate(content, SCHEMA)


async def test_json_object_streamed(replica: Any) -> None:
    async with replica(text='{"a": [1, 2], "b": "x"}') as (client, _):
        response = await client.post(
            "/v1/chat/completions",
            json=body(response_format={"type": "json_object"}, stream=True, seed=7),
        )
    chunks = sse_payloads(response.text)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert isinstance(json.loads(text, strict=False), dict)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "b"}}])
async def test_forced_tool_calls(replica: Any, choice: Any) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": name,
                "parameters": {
                    "type": "object",
                    "properties": {"x": {"type": "integer"}},
                    "required": ["x"],
                    "additionalProperties": False,
                },
            },
        }
        for name in ("a", "b")
    ]
    async with replica() as (client, _):
        response = await client.post(
            "/v1/chat/completions",
            json=body(tools=tools, tool_choice=choice, parallel_tool_calls=False, seed=3),
        )
    result = response.json()
    assert_conforms("CreateChatCompletionResponse", result)
    choice_out = result["choices"][0]
    assert choice_out["finish_reason"] == "tool_calls"
    (call,) = choice_out["message"]["tool_calls"]
    if isinstance(choice, dict):
        assert call["function"]["name"] == "b"
    assert isinstance(json.loads(call["function"]["arguments"])["x"], int)


async def test_invalid_schema_is_a_400(replica: Any) -> None:
    bad = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "wrong"}}}
    async with replica() as (client, _):
        response = await client.post("/v1/chat/completions", json=body(response_format=bad))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "response_format"
    assert "wrong" in error["message"]


def test_grammar_waits_for_end_of_thinking(tokenizer: PreTrainedTokenizerBase) -> None:
    cache = GrammarCompilerCache(tokenizer, vocab_size=151936, stop_token_ids=[151645])
    compiled = cache.json_schema({"type": "object"}, param="response_format")
    assert cache.json_schema({"type": "object"}, param="response_format") is compiled
    think, end_think = 151667, 151668
    gated = AfterThinking(
        GrammarConstraint(compiled, 151936), think_start=think, think_end=end_think, thinking=False
    )
    logits = torch.zeros(151936)
    gated.mask_logits(logits)
    letter = tokenizer.encode("x", add_special_tokens=False)[0]
    brace = tokenizer.encode("{", add_special_tokens=False)[0]
    assert logits[think] == 0
    assert logits[brace] == 0
    assert logits[letter] == -torch.inf
    gated.accept(think)
    logits = torch.zeros(151936)
    gated.mask_logits(logits)
    assert bool((logits == 0).all())  # free text while thinking
    for token in [letter, end_think]:
        gated.accept(token)
    logits = torch.zeros(151936)
    gated.mask_logits(logits)
    assert logits[letter] == -torch.inf
    assert logits[brace] == 0
    assert not gated.is_finished()


def test_invalid_ref_is_reported(tokenizer: PreTrainedTokenizerBase) -> None:
    cache = GrammarCompilerCache(tokenizer, vocab_size=151936, stop_token_ids=[151645])
    with pytest.raises(OpenAIError) as info:
        cache.json_schema({"$ref": "#/nowhere"}, param="response_format")
    assert info.value.status_code == 400
    assert info.value.param == "response_format"
