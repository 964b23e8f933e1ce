"""Grammars through the real app: a fake engine samples uniformly among allowed tokens."""

from __future__ import annotations

import json
import random
import re
from typing import Any

import jsonschema
import pydantic_core
import pytest
import torch
import xgrammar as xgr
from transformers import PreTrainedTokenizerBase

from aiforge.engines.server.grammar import GrammarCompilerCache, GrammarConstraint
from aiforge.engines.server.thinking import ThinkingConstraint, ThinkMarkers
from aiforge.engines.server.tool_calls import TOOL_CALL_END, TOOL_CALL_START
from aiforge.protocol.openai.errors import OpenAIError
from aiforge.testing.fake_engine import sse_payloads
from aiforge.testing.openai_schema import assert_conforms

MODEL = "qwen3-test"
VOCAB = 151936
EOS = 151645
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


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_json_schema_output_validates(replica: Any, seed: int) -> None:
    response_format = {"type": "json_schema", "json_schema": {"name": "p", "schema": SCHEMA}}
    async with replica(text="") as (client, _):  # no script: uniform among allowed tokens
        response = await client.post(
            "/v1/chat/completions", json=body(response_format=response_format, seed=seed)
        )
    result = response.json()
    assert_conforms("CreateChatCompletionResponse", result)
    assert result["choices"][0]["finish_reason"] == "stop"
    content = result["choices"][0]["message"]["content"]
    jsonschema.validate(json.loads(content), SCHEMA)
    pydantic_core.from_json(content)


async def test_json_object_streamed(replica: Any) -> None:
    async with replica(text='{"a": [1, 2], "b": "x"}') as (client, _):
        response = await client.post(
            "/v1/chat/completions",
            json=body(response_format={"type": "json_object"}, stream=True, seed=7),
        )
    chunks = sse_payloads(response.text)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert isinstance(json.loads(text), dict)
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


TWO_CALLS = "".join(
    f'<tool_call>\n{{"name": "b", "arguments": {{"x": {x}}}}}\n</tool_call>\n' for x in (1, 2)
)


@pytest.mark.parametrize("stream", [False, True])
async def test_named_tool_choice_makes_exactly_one_call(replica: Any, stream: bool) -> None:
    """The model would go on calling (as a real one did); the grammar ends after one call."""
    tools = [
        {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}
        for name in ("a", "b")
    ]
    choice = {"type": "function", "function": {"name": "b"}}
    request = body(tools=tools, tool_choice=choice, seed=5, max_tokens=200)
    async with replica(text=TWO_CALLS) as (client, _):
        if stream:
            request.update(stream=True, stream_options={"include_usage": True})
        response = await client.post("/v1/chat/completions", json=request)
    if stream:
        chunks = sse_payloads(response.text)
        deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
        calls = [tc for d in deltas for tc in d.get("tool_calls", [])]
        assert {call["index"] for call in calls} == {0}
        arguments = "".join(call["function"].get("arguments", "") for call in calls)
        finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1]
        usage = chunks[-1]["usage"]
    else:
        result = response.json()
        (call,) = result["choices"][0]["message"]["tool_calls"]
        arguments, finish = call["function"]["arguments"], result["choices"][0]["finish_reason"]
        usage = result["usage"]
    assert json.loads(arguments) == {"x": 1}
    assert finish == "tool_calls"
    assert usage["completion_tokens"] < 40  # stopped after the call, not at max_tokens


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
    markers = ThinkMarkers.of(tokenizer)
    assert markers is not None
    assert (markers.start, markers.end) == (think, end_think)
    gated = ThinkingConstraint(
        markers, start="undecided", answer=GrammarConstraint(compiled, 151936)
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


# -- strict JSON, always: random schemas walked by a sampler that seeks the edges ----------


@pytest.fixture(scope="module")
def grammars(tokenizer: PreTrainedTokenizerBase) -> GrammarCompilerCache:
    return GrammarCompilerCache(tokenizer, vocab_size=VOCAB, stop_token_ids=[EOS])


@pytest.fixture(scope="module")
def edge_tokens(tokenizer: PreTrainedTokenizerBase) -> torch.Tensor:
    """Tokens a string grammar must judge: control characters, quotes, backslashes."""
    texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    edges = torch.zeros(VOCAB, dtype=torch.bool)
    edges[[i for i, text in enumerate(texts) if re.search(r'[\x00-\x1f"\\]', text)]] = True
    return edges


def random_schema(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    """A small schema heavy on strings, in each form xgrammar writes differently."""
    kinds = ["bounded", "bounded", "plain", "pattern", "enum", "format", "array", "nullable"]
    kind = rng.choice(kinds + (["object", "map"] if depth < 2 else []))
    if kind == "bounded":
        most = rng.randint(1, 8)
        return {"type": "string", "minLength": rng.randint(0, most), "maxLength": most}
    if kind == "plain":
        return {"type": "string"}
    if kind == "pattern":
        return {"type": "string", "pattern": rng.choice(["^[a-z]+.x.*$", "^x", "^.{2,5}$"])}
    if kind == "enum":
        return {"enum": ["tab\tx", 'say "hi"', "back\\slash", "caf\u00e9", "bell\u0007"]}
    if kind == "format":
        return {"type": "string", "format": rng.choice(["date-time", "email", "uuid", "uri"])}
    if kind == "array":
        return {"type": "array", "items": random_schema(rng, depth + 1), "maxItems": 3}
    if kind == "nullable":
        return {"anyOf": [{"type": "string", "maxLength": rng.randint(1, 6)}, {"type": "null"}]}
    if kind == "map":
        return {
            "type": "object",
            "additionalProperties": {"type": "string", "maxLength": 4},
            "propertyNames": {"maxLength": 3},
            "maxProperties": 2,
        }
    return random_object(rng, depth + 1)


def random_object(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    properties = {f"p{i}": random_schema(rng, depth) for i in range(rng.randint(1, 3))}
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def walk(constraint: GrammarConstraint, rng: random.Random, edges: torch.Tensor) -> list[int]:
    """Tokens the grammar allows, an edge token half the time: until the grammar ends."""
    out: list[int] = []
    for _ in range(600):
        logits = torch.zeros(VOCAB)
        constraint.mask_logits(logits)
        allowed = logits == 0
        edgy = torch.nonzero(allowed & edges).flatten().tolist()
        choices = edgy if edgy and rng.random() < 0.5 else torch.nonzero(allowed).flatten()
        token = int(rng.choice(choices))
        constraint.accept(token)
        if constraint.is_finished():
            return out
        out.append(token)
    raise AssertionError("the grammar did not end")


def decode(tokenizer: PreTrainedTokenizerBase, tokens: list[int]) -> str:
    text = tokenizer.decode(tokens)
    assert isinstance(text, str)
    return text


def assert_strict_json(text: str, schema: dict[str, Any]) -> None:
    """Parses with strict parsers (Python's, pydantic's) and validates against ``schema``."""
    jsonschema.validate(json.loads(text), schema)
    pydantic_core.from_json(text)


@pytest.mark.parametrize("schema_seed", range(10))
def test_output_parses_strictly_and_validates(
    tokenizer: PreTrainedTokenizerBase,
    grammars: GrammarCompilerCache,
    edge_tokens: torch.Tensor,
    schema_seed: int,
) -> None:
    schema = random_object(random.Random(schema_seed))
    compiled = grammars.json_schema(schema, param="response_format")
    for seed in range(3):
        tokens = walk(GrammarConstraint(compiled, VOCAB), random.Random(seed), edge_tokens)
        text = decode(tokenizer, tokens)
        try:
            assert_strict_json(text, schema)
        except ValueError as exc:  # JSONDecodeError, pydantic's, jsonschema's are ValueErrors
            raise AssertionError(f"{schema}\n{text!r}") from exc


def test_tool_call_arguments_parse_strictly(
    tokenizer: PreTrainedTokenizerBase, grammars: GrammarCompilerCache, edge_tokens: torch.Tensor
) -> None:
    params = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 8},
            "note": {"type": "string"},
            "more": random_object(random.Random(99)),
        },
        "required": ["name", "note", "more"],
    }
    compiled = grammars.tool_calls([("f", params)], parallel=False, param="tools")
    for seed in range(3):
        tokens = walk(GrammarConstraint(compiled, VOCAB), random.Random(seed), edge_tokens)
        text = decode(tokenizer, tokens)
        assert text.startswith(TOOL_CALL_START)
        assert text.endswith(TOOL_CALL_END)
        call = text[len(TOOL_CALL_START) : -len(TOOL_CALL_END)]
        jsonschema.validate(json.loads(call)["arguments"], params)
        pydantic_core.from_json(call)


@pytest.mark.parametrize(
    ("value", "allowed"),
    [
        ('"ab\\"c"', True),  # an escape counts as one character of maxLength
        ('"\\u00e9\\n"', True),
        ('"\\ud83d\\ude00"', True),  # a surrogate pair
        ('"\\ud800"', False),  # a lone surrogate: pydantic and UTF-8 refuse it
        ('"\\udc00x"', False),
        ('"a\tb"', False),  # raw control characters
        ('"a\u0006"', False),
        ('"abcdef"', False),  # too long
    ],
)
@pytest.mark.parametrize("bounded", [True, False])
def test_string_characters_are_json_s(
    grammars: GrammarCompilerCache, value: str, allowed: bool, bounded: bool
) -> None:
    schema: dict[str, Any] = {"type": "string", "maxLength": 4} if bounded else {"type": "string"}
    if not bounded and value == '"abcdef"':
        allowed = True
    matcher = xgr.GrammarMatcher(grammars.json_schema(schema, param="response_format"))
    accepted = matcher.accept_string(value) and matcher.is_completed()
    assert accepted == allowed
