"""Reasoning controls through the real replica app (a scripted engine that follows the
constraint): budgets close the think block, answers and grammars follow, usage counts."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from transformers import PreTrainedTokenizerBase

from aiforge.testing.fake_engine import FakeTokenEngine, fake_replica, sse_payloads
from aiforge.testing.openai_schema import assert_conforms

MODEL = "qwen3-test"
EOS = 151645
REASONING = " ".join(f"step{i}" for i in range(40))
SCHEMA = {
    "type": "object",
    "properties": {"colour": {"type": "string", "enum": ["red", "green"]}},
    "required": ["colour"],
    "additionalProperties": False,
}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "paint",
            "parameters": {
                "type": "object",
                "properties": {"colour": {"type": "string", "enum": ["red", "green"]}},
                "required": ["colour"],
                "additionalProperties": False,
            },
        },
    }
]
# Qwen3-Thinking-2507's generation prompt: the template opens <think> itself.
_GENERATION_PROMPT = """    {{- '<|im_start|>assistant\\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\\n\\n</think>\\n\\n' }}
    {%- endif %}"""
_THINKING_2507_PROMPT = "    {{- '<|im_start|>assistant\\n<think>\\n' }}"


def ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))


def decode(tokenizer: PreTrainedTokenizerBase, tokens: list[int]) -> str:
    return str(tokenizer.decode(tokens))


@pytest.fixture(scope="module")
def thinking_2507(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    variant = copy.deepcopy(tokenizer)
    template = str(tokenizer.chat_template)
    assert _GENERATION_PROMPT in template
    variant.chat_template = template.replace(_GENERATION_PROMPT, _THINKING_2507_PROMPT)
    return variant


@asynccontextmanager
async def replica_saying(
    tokenizer: PreTrainedTokenizerBase, text: str
) -> AsyncIterator[tuple[httpx.AsyncClient, FakeTokenEngine]]:
    """A replica whose engine says ``text`` then EOS (following any constraint's mask)."""
    script = [*ids(tokenizer, text), EOS]
    engine = FakeTokenEngine(script=lambda _request: script)
    async with fake_replica(engine, tokenizer, served_model_name=MODEL) as client:
        yield client, engine


def body(**extra: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Pick a colour."}],
        "max_tokens": 200,
        "seed": 1,
        **extra,
    }


async def chat(client: httpx.AsyncClient, **extra: Any) -> dict[str, Any]:
    response = await client.post("/v1/chat/completions", json=body(**extra))
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    assert_conforms("CreateChatCompletionResponse", result)
    return result


def reasoning_tokens(result: dict[str, Any]) -> int:
    count: int = result["usage"]["completion_tokens_details"]["reasoning_tokens"]
    return count


async def test_budget_closes_the_block_and_the_answer_follows(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    async with replica_saying(tokenizer, f"<think>\n{REASONING}") as (client, engine):
        result = await chat(client, thinking_budget=5)
    message = result["choices"][0]["message"]
    first_five = decode(tokenizer, ids(tokenizer, f"\n{REASONING}")[:5]).strip()
    assert message["reasoning_content"] == first_five
    assert message["content"]  # the answer came after the forced </think>
    assert "</think>" not in message["reasoning_content"]
    assert reasoning_tokens(result) == 5
    assert result["choices"][0]["finish_reason"] == "stop"
    # The engine wrote the close itself, right after the fifth reasoning token.
    prompt_end = decode(tokenizer, engine.requests[0].prompt_token_ids)[-30:]
    assert not prompt_end.rstrip().endswith("</think>")


async def test_natural_close_within_budget_is_left_alone(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    text = "<think>\nShort thought.\n</think>\n\nRed."
    async with replica_saying(tokenizer, text) as (client, _):
        result = await chat(client, thinking_budget=100)
    message = result["choices"][0]["message"]
    assert message["reasoning_content"] == "Short thought."
    assert message["content"] == "Red."
    assert reasoning_tokens(result) == len(ids(tokenizer, "\nShort thought.\n"))


@pytest.mark.parametrize("stream", [False, True])
async def test_structured_output_after_a_spent_budget_is_valid_json(
    tokenizer: PreTrainedTokenizerBase, stream: bool
) -> None:
    """The model would think forever; the budget closes the block, the grammar answers."""
    response_format = {"type": "json_schema", "json_schema": {"name": "c", "schema": SCHEMA}}
    request = body(response_format=response_format, thinking_budget=8)
    if stream:
        request.update(stream=True, stream_options={"include_usage": True})
    async with replica_saying(tokenizer, f"<think>\n{REASONING}") as (client, _):
        response = await client.post("/v1/chat/completions", json=request)
    if stream:
        chunks = sse_payloads(response.text)
        for chunk in chunks:
            assert_conforms("CreateChatCompletionStreamResponse", chunk)
        deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
        content = "".join(d.get("content", "") for d in deltas)
        reasoning = "".join(d.get("reasoning_content", "") for d in deltas)
        finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1]
        usage = chunks[-1]["usage"]
    else:
        result = response.json()
        assert_conforms("CreateChatCompletionResponse", result)
        message = result["choices"][0]["message"]
        content, reasoning = message["content"], message["reasoning_content"]
        finish, usage = result["choices"][0]["finish_reason"], result["usage"]
    assert json.loads(content)["colour"] in {"red", "green"}
    assert reasoning.startswith("step0")
    assert finish == "stop"
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 8


@pytest.mark.parametrize(
    "choice", ["required", {"type": "function", "function": {"name": "paint"}}]
)
async def test_forced_tool_call_after_a_spent_budget_completes(
    tokenizer: PreTrainedTokenizerBase, choice: Any
) -> None:
    async with replica_saying(tokenizer, f"<think>\n{REASONING}") as (client, _):
        result = await chat(client, tools=TOOLS, tool_choice=choice, thinking_budget=6)
    (call,) = result["choices"][0]["message"]["tool_calls"]
    assert call["function"]["name"] == "paint"
    assert json.loads(call["function"]["arguments"])["colour"] in {"red", "green"}
    assert result["choices"][0]["finish_reason"] == "tool_calls"
    assert reasoning_tokens(result) == 6


async def test_a_grammar_keeps_the_sequence_from_ending_inside_the_block(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    """The model tries to stop while thinking: EOS is masked, so the answer still comes."""
    response_format = {"type": "json_schema", "json_schema": {"name": "c", "schema": SCHEMA}}
    async with replica_saying(tokenizer, "<think>\nHmm") as (client, _):
        result = await chat(client, response_format=response_format, thinking_budget=20)
    assert json.loads(result["choices"][0]["message"]["content"])["colour"] in {"red", "green"}


async def test_effort_none_renders_thinking_off(tokenizer: PreTrainedTokenizerBase) -> None:
    async with replica_saying(tokenizer, "Red.") as (client, engine):
        result = await chat(client, reasoning_effort="none")
        on = await chat(client, reasoning_effort="low")
    off_prompt = decode(tokenizer, engine.requests[0].prompt_token_ids)
    on_prompt = decode(tokenizer, engine.requests[1].prompt_token_ids)
    assert off_prompt.endswith("<think>\n\n</think>\n\n")
    assert on_prompt.endswith("<|im_start|>assistant\n")
    assert result["choices"][0]["message"]["content"] == "Red."
    assert reasoning_tokens(result) == 0
    assert on["choices"][0]["message"]["content"] == "Red."


@pytest.mark.parametrize(
    "extra",
    [
        {"enable_thinking": False},
        {"chat_template_kwargs": {"enable_thinking": False}},
        {"thinking_budget": 0},
    ],
)
async def test_every_way_to_turn_thinking_off(
    tokenizer: PreTrainedTokenizerBase, extra: dict[str, Any]
) -> None:
    async with replica_saying(tokenizer, "Red.") as (client, engine):
        await chat(client, **extra)
    assert decode(tokenizer, engine.requests[0].prompt_token_ids).endswith("</think>\n\n")


async def test_a_template_that_opens_think_is_parsed_right(
    thinking_2507: PreTrainedTokenizerBase,
) -> None:
    text = "The user wants a colour.\n</think>\n\nRed."
    async with replica_saying(thinking_2507, text) as (client, engine):
        result = await chat(client)
        stream = await client.post(
            "/v1/chat/completions",
            json=body(stream=True, stream_options={"include_usage": True}),
        )
    assert decode(thinking_2507, engine.requests[0].prompt_token_ids).endswith("<think>\n")
    message = result["choices"][0]["message"]
    assert message["reasoning_content"] == "The user wants a colour."
    assert message["content"] == "Red."
    expected = len(ids(thinking_2507, "The user wants a colour.\n"))
    assert reasoning_tokens(result) == expected
    chunks = sse_payloads(stream.text)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "The user wants a colour."
    assert "".join(d.get("content", "") for d in deltas) == "Red."
    assert chunks[-1]["usage"]["completion_tokens_details"]["reasoning_tokens"] == expected


async def test_thinking_off_on_a_template_that_always_thinks_closes_at_once(
    thinking_2507: PreTrainedTokenizerBase,
) -> None:
    async with replica_saying(thinking_2507, f"{REASONING}\n</think>\n\nRed.") as (client, _):
        result = await chat(client, enable_thinking=False)
        budgeted = await chat(client, thinking_budget=3)
    assert "reasoning_content" not in result["choices"][0]["message"]
    assert reasoning_tokens(result) == 0
    assert result["choices"][0]["message"]["content"]
    first_three = decode(thinking_2507, ids(thinking_2507, REASONING)[:3]).strip()
    assert budgeted["choices"][0]["message"]["reasoning_content"] == first_three
    assert reasoning_tokens(budgeted) == 3


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"reasoning_effort": "extreme"}, "reasoning_effort"),
        ({"thinking_budget": -1}, "thinking_budget"),
        ({"thinking_budget": "5"}, "thinking_budget"),
        ({"enable_thinking": "yes"}, "enable_thinking"),
        ({"enable_thinking": True, "chat_template_kwargs": {"enable_thinking": False}},
         "enable_thinking"),
        ({"chat_template_kwargs": {"enable_thinking": 1}}, "chat_template_kwargs.enable_thinking"),
    ],
)  # fmt: skip
async def test_invalid_reasoning_controls_are_a_400_naming_the_param(
    tokenizer: PreTrainedTokenizerBase, extra: dict[str, Any], param: str
) -> None:
    async with replica_saying(tokenizer, "Red.") as (client, engine):
        response = await client.post("/v1/chat/completions", json=body(**extra))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert engine.requests == []
