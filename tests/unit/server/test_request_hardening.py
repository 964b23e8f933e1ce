"""Issue 7: no request reaches the engine with a value it cannot take, no request can stall
the replica, and a dead engine loop shows in ``/health`` (items 1, 5 and 10, replica side).

Every refusal is a 400 in OpenAI's envelope naming the parameter; the replica serves on.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from transformers import PreTrainedTokenizerBase

from aiforge.engines.server.limits import RequestLimits
from aiforge.testing.fake_engine import FakeTokenEngine, fake_replica, text_script
from aiforge.testing.openai_schema import assert_conforms

MODEL = "qwen3-test"
MESSAGES = [{"role": "user", "content": "Hi"}]
VOCAB = 151936
NESTED_LOOPS = "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}"


@asynccontextmanager
async def replica(
    tokenizer: Any, *, limits: RequestLimits | None = None, **engine_kwargs: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, FakeTokenEngine]]:
    engine = FakeTokenEngine(script=text_script(tokenizer, "Hello there!"), **engine_kwargs)
    async with fake_replica(
        engine, tokenizer, served_model_name=MODEL, max_body_bytes=4 << 20, limits=limits
    ) as client:
        yield client, engine


def _refused(response: httpx.Response, param: str) -> dict[str, Any]:
    assert response.status_code == 400, response.text
    body = response.json()
    assert_conforms("ErrorResponse", body)
    assert body["error"]["param"] == param, body
    error: dict[str, Any] = body["error"]
    return error


def _raw(body: dict[str, Any]) -> dict[str, Any]:
    """A JSON body sent as is (NaN and Infinity included, as Python's json writes them)."""
    return {
        "content": json.dumps(body, allow_nan=True),
        "headers": {"content-type": "application/json"},
    }


# -- item 1 and 10: every numeric parameter checked at the edge -------------------------

CHAT_BAD = [
    ({"seed": 1180591620717411303424}, "seed"),
    ({"seed": -(2**63) - 1}, "seed"),
    ({"max_tokens": True}, "max_tokens"),
    ({"max_completion_tokens": True}, "max_completion_tokens"),
    ({"max_tokens": "10"}, "max_tokens"),
    ({"n": True}, "n"),
    ({"temperature": True}, "temperature"),
    ({"temperature": float("nan")}, "temperature"),
    ({"top_p": float("nan")}, "top_p"),
    ({"presence_penalty": float("inf")}, "presence_penalty"),
    ({"repetition_penalty": float("inf")}, "repetition_penalty"),
    ({"top_k": 2**70}, "top_k"),
    ({"logprobs": 1}, "logprobs"),
    ({"logprobs": True, "top_logprobs": True}, "top_logprobs"),
    ({"stream": "yes"}, "stream"),
    ({"logit_bias": {str(VOCAB): 1}}, "logit_bias"),
    ({"logit_bias": {"99999999999999999999999": 1}}, "logit_bias"),
    ({"logit_bias": {"5": 101}}, "logit_bias"),
    ({"logit_bias": {"5": True}}, "logit_bias.5"),
    ({"logit_bias": {"5": float("nan")}}, "logit_bias.5"),
    ({"logit_bias": {str(i): 1 for i in range(1025)}}, "logit_bias"),
    ({"stop": "x" * 1_000_000}, "stop"),
    ({"stop": ["ok", "y" * 5000]}, "stop[1]"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
]


@pytest.mark.parametrize(("extra", "param"), CHAT_BAD, ids=[p for _, p in CHAT_BAD])
async def test_chat_refuses_values_the_engine_cannot_take(
    tokenizer: PreTrainedTokenizerBase, extra: dict[str, Any], param: str
) -> None:
    async with replica(tokenizer) as (client, engine):
        body = {"model": MODEL, "messages": MESSAGES, **extra}
        response = await client.post("/v1/chat/completions", **_raw(body))
        after = await client.post(
            "/v1/chat/completions", json={"model": MODEL, "messages": MESSAGES, "seed": 2**63 - 1}
        )
    error = _refused(response, param)
    assert "Traceback" not in error["message"]
    assert engine.requests[-1].params.seed == 2**63 - 1
    assert after.status_code == 200


COMPLETION_BAD = [
    ({"seed": 2**64}, "seed"),
    ({"max_tokens": True}, "max_tokens"),
    ({"logprobs": True}, "logprobs"),
    ({"n": 2.5}, "n"),
    ({"prompt": [1, 2, True]}, "prompt[2]"),
    ({"prompt": [[VOCAB]]}, "prompt"),
    ({"logit_bias": {"-1": 3}}, "logit_bias"),
    ({"stop": "z" * 100_000}, "stop"),
]


@pytest.mark.parametrize(("extra", "param"), COMPLETION_BAD, ids=[p for _, p in COMPLETION_BAD])
async def test_completions_refuse_values_the_engine_cannot_take(
    tokenizer: PreTrainedTokenizerBase, extra: dict[str, Any], param: str
) -> None:
    async with replica(tokenizer) as (client, _):
        response = await client.post(
            "/v1/completions", **_raw({"model": MODEL, "prompt": "Hi", **extra})
        )
    _refused(response, param)


async def test_logit_bias_within_the_vocabulary_reaches_the_engine(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    async with replica(tokenizer) as (client, engine):
        response = await client.post(
            "/v1/chat/completions",
            json={"model": MODEL, "messages": MESSAGES, "logit_bias": {str(VOCAB - 1): -100}},
        )
    assert response.status_code == 200
    assert engine.requests[-1].params.logit_bias == ((VOCAB - 1, -100.0),)


# -- item 1: a dead engine loop ------------------------------------------------------------


async def test_a_dead_engine_loop_fails_health_and_requests_fast(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    async with replica(tokenizer) as (client, engine):
        assert (await client.get("/health")).status_code == 200
        engine.fatal = "RuntimeError: the loop died"
        health = await client.get("/health")
        started = time.perf_counter()
        chat = await client.post(
            "/v1/chat/completions", json={"model": MODEL, "messages": MESSAGES}
        )
        completion = await client.post("/v1/completions", json={"model": MODEL, "prompt": "Hi"})
        elapsed = time.perf_counter() - started
    assert health.status_code == 503
    assert health.json()["status"] == "failed"
    for response in (chat, completion):
        assert response.status_code == 503
        assert_conforms("ErrorResponse", response.json())
    assert elapsed < 2


async def test_an_engine_that_dies_under_a_request_is_a_503(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    from aiforge.engines.core import EngineDeadError

    async with replica(tokenizer, fail_with=EngineDeadError("gone")) as (client, _):
        whole = await client.post(
            "/v1/chat/completions", json={"model": MODEL, "messages": MESSAGES}
        )
        streamed = await client.post(
            "/v1/chat/completions", json={"model": MODEL, "messages": MESSAGES, "stream": True}
        )
    assert whole.status_code == 503
    assert '"code":"engine_unavailable"' in streamed.text.replace(" ", "")


# -- item 5: per-request limits from settings -----------------------------------------------


async def test_prompt_and_sequence_limits(tokenizer: PreTrainedTokenizerBase) -> None:
    limits = RequestLimits(max_prompt_chars=1000, max_prompt_tokens=50, max_sequences=16)
    async with replica(tokenizer, limits=limits) as (client, _):
        long_chat = await client.post(
            "/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": "x" * 1001}]},
        )
        many_tokens = await client.post(
            "/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": "a b " * 40}]},
        )
        long_prompt = await client.post(
            "/v1/completions", json={"model": MODEL, "prompt": ["ok", "y" * 1001]}
        )
        token_prompt = await client.post(
            "/v1/completions", json={"model": MODEL, "prompt": list(range(51))}
        )
        sequences = await client.post(
            "/v1/completions", json={"model": MODEL, "prompt": ["a"] * 5, "n": 4}
        )
        prompts = await client.post("/v1/completions", json={"model": MODEL, "prompt": ["a"] * 17})
        fits = await client.post(
            "/v1/completions", json={"model": MODEL, "prompt": ["a"] * 4, "n": 4}
        )
    _refused(long_chat, "messages")
    _refused(many_tokens, "messages")
    _refused(long_prompt, "prompt")
    _refused(token_prompt, "prompt")
    _refused(sequences, "n")
    _refused(prompts, "prompt")
    assert fits.status_code == 200
    assert len(fits.json()["choices"]) == 16


def _json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}


async def test_schema_size_limits(tokenizer: PreTrainedTokenizerBase) -> None:
    limits = RequestLimits(max_json_schema_bytes=2000, max_json_schema_enum_values=100)
    big_enum = {"type": "string", "enum": [f"v{i}" for i in range(100_000)]}
    nested_enum = {
        "type": "object",
        "properties": {f"p{i}": {"enum": list(range(30))} for i in range(4)},
    }
    long_text = {"type": "string", "description": "d" * 3000}
    async with replica(tokenizer, limits=limits) as (client, _):
        started = time.perf_counter()
        enum = await client.post(
            "/v1/chat/completions",
            json={"model": MODEL, "messages": MESSAGES, "response_format": _json_schema(big_enum)},
        )
        elapsed = time.perf_counter() - started
        nested = await client.post(
            "/v1/chat/completions",
            json={
                "model": MODEL,
                "messages": MESSAGES,
                "response_format": _json_schema(nested_enum),
            },
        )
        large = await client.post(
            "/v1/chat/completions",
            json={"model": MODEL, "messages": MESSAGES, "response_format": _json_schema(long_text)},
        )
        tool = {
            "type": "function",
            "function": {"name": "f", "parameters": {"type": "object", **nested_enum}},
        }
        tools = await client.post(
            "/v1/chat/completions",
            json={"model": MODEL, "messages": MESSAGES, "tools": [tool], "tool_choice": "required"},
        )
    assert elapsed < 2
    _refused(enum, "response_format")
    _refused(nested, "response_format")
    _refused(large, "response_format")
    _refused(tools, "tools")


# -- item 5: chat templates are untrusted code ---------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        {"chat_template": "{{ messages[0].content }}"},
        {"chat_template_kwargs": {"chat_template": "{{ messages[0].content }}"}},
    ],
    ids=["field", "kwargs"],
)
async def test_request_chat_template_is_refused_by_default(
    tokenizer: PreTrainedTokenizerBase, extra: dict[str, Any]
) -> None:
    async with replica(tokenizer) as (client, engine):
        response = await client.post(
            "/v1/chat/completions", json={"model": MODEL, "messages": MESSAGES, **extra}
        )
    _refused(response, "chat_template")
    assert not engine.requests


async def test_allowed_chat_template_renders_in_a_bounded_sandbox(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    limits = RequestLimits(allow_request_chat_template=True, chat_template_timeout_s=1.0)
    async with replica(tokenizer, limits=limits) as (client, engine):
        plain = await client.post(
            "/v1/chat/completions",
            json={
                "model": MODEL,
                "messages": MESSAGES,
                "chat_template": "<{{ messages[0].content }}>",
            },
        )
        started = time.perf_counter()
        nested = await client.post(
            "/v1/chat/completions",
            json={"model": MODEL, "messages": MESSAGES, "chat_template": NESTED_LOOPS},
        )
        elapsed = time.perf_counter() - started
        escape = await client.post(
            "/v1/chat/completions",
            json={
                "model": MODEL,
                "messages": MESSAGES,
                "chat_template": "{{ messages.__class__.__mro__ }}",
            },
        )
        power = await client.post(
            "/v1/chat/completions",
            json={"model": MODEL, "messages": MESSAGES, "chat_template": "{{ 'x' * 10**9 }}"},
        )
        health = await client.get("/health")
    assert plain.status_code == 200
    assert engine.requests[0].prompt_token_ids == tokenizer.encode("<Hi>")
    assert elapsed < 5
    for refused in (nested, escape, power):
        _refused(refused, "chat_template")
    assert health.status_code == 200


@pytest.mark.parametrize(
    "kwargs",
    [{"tools": 5}, {"messages": []}, {"add_generation_prompt": False}, {"tokenize": True}],
)
async def test_chat_template_kwargs_errors_name_no_python_internals(
    tokenizer: PreTrainedTokenizerBase, kwargs: dict[str, Any]
) -> None:
    async with replica(tokenizer) as (client, _):
        response = await client.post(
            "/v1/chat/completions",
            json={"model": MODEL, "messages": MESSAGES, "chat_template_kwargs": kwargs},
        )
    error = _refused(response, "chat_template_kwargs")
    for internal in ("keyword argument", "apply_chat_template", "Error", "()", "Traceback"):
        assert internal not in error["message"]


CONVERSATIONS: list[dict[str, Any]] = [
    {"messages": [{"role": "user", "content": "Hi"}]},
    {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather?"},
            {
                "role": "assistant",
                "content": "",
                "reasoning_content": "Call the tool.",
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                },
            }
        ],
        "chat_template_kwargs": {"enable_thinking": False},
    },
]


CONVERSATIONS.append(
    {
        "messages": [
            {"role": "developer", "content": [{"type": "text", "text": "Rules."}]},
            {"role": "user", "content": "One?"},
            {"role": "assistant", "content": "1", "reasoning_content": "Easy."},
            {"role": "user", "content": "Two?"},
        ]
    }
)


@pytest.mark.parametrize("body", CONVERSATIONS, ids=["plain", "tools-and-thinking", "multi-turn"])
async def test_sandboxed_rendering_matches_transformers(
    tokenizer: PreTrainedTokenizerBase, body: dict[str, Any]
) -> None:
    from aiforge.engines.server.chat import template_messages
    from aiforge.protocol.openai.chat import ChatCompletionRequest

    request = ChatCompletionRequest.model_validate({"model": MODEL, **body})
    kwargs = {"enable_thinking": True, **(request.chat_template_kwargs or {})}
    expected = tokenizer.apply_chat_template(
        template_messages(request.messages),
        tools=[t.model_dump(exclude_none=True) for t in request.tools or []] or None,
        add_generation_prompt=True,
        tokenize=False,
        **kwargs,
    )
    async with replica(tokenizer) as (client, engine):
        response = await client.post("/v1/chat/completions", json={"model": MODEL, **body})
    assert response.status_code == 200
    assert engine.requests[0].prompt_token_ids == tokenizer.encode(
        expected, add_special_tokens=False
    )


# -- item 5: preparing a request never blocks the event loop --------------------------------


class _SlowTokenizer:
    """The real tokenizer, but encoding a long text takes a second (a 7 MB prompt would)."""

    def __init__(self, inner: PreTrainedTokenizerBase) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def encode(self, text: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(text, str) and len(text) > 5000:
            time.sleep(1.0)
        return self._inner.encode(text, *args, **kwargs)


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
async def test_health_answers_while_a_big_request_is_prepared(
    tokenizer: PreTrainedTokenizerBase, endpoint: str
) -> None:
    slow: Any = _SlowTokenizer(tokenizer)
    async with replica(slow) as (client, _):
        if endpoint == "chat":
            path = "/v1/chat/completions"
            body: dict[str, Any] = {
                "model": MODEL,
                "messages": [{"role": "user", "content": "word " * 2000}],
            }
        else:
            path = "/v1/completions"
            body = {"model": MODEL, "prompt": "word " * 2000}
        launched = time.perf_counter()
        big = asyncio.create_task(client.post(path, json=body))
        await asyncio.sleep(0.2)  # the big request is being prepared now
        health = await client.get("/health")
        waited = time.perf_counter() - launched
        finished = await big
    assert health.status_code == 200
    assert waited < 0.8  # the preparation alone takes more than a second
    assert finished.status_code == 200


def test_limits_come_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from aiforge.config import Settings

    assert RequestLimits.from_settings(Settings()) == RequestLimits()
    monkeypatch.setenv("AIFORGE_ALLOW_REQUEST_CHAT_TEMPLATE", "true")
    monkeypatch.setenv("AIFORGE_MAX_SEQUENCES_PER_REQUEST", "4")
    limits = RequestLimits.from_settings(Settings())
    assert limits.allow_request_chat_template
    assert limits.max_sequences == 4


async def test_embeddings_refuse_ids_outside_the_vocabulary_and_long_inputs(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    limits = RequestLimits(max_prompt_chars=100)
    async with replica(tokenizer, limits=limits, embedding_dim=8) as (client, _):
        ids = await client.post("/v1/embeddings", json={"model": MODEL, "input": [[VOCAB]]})
        flag = await client.post("/v1/embeddings", json={"model": MODEL, "input": [1, True]})
        long = await client.post("/v1/embeddings", json={"model": MODEL, "input": "x" * 101})
        fine = await client.post("/v1/embeddings", json={"model": MODEL, "input": [[VOCAB - 1]]})
    _refused(ids, "input")
    assert flag.status_code == 400
    _refused(long, "input")
    assert fine.status_code == 200
