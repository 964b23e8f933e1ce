"""Thinking budgets on aiforge's real token engines (transformers, llama.cpp), through the
replica app: a tiny random Qwen3 never closes ``</think>`` by itself, so everything after
the budget is the engine's doing.

The chat template is Qwen3-Thinking-2507's (the prompt opens ``<think>``), which puts a
random model inside the block from its first token.
"""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from transformers import PreTrainedTokenizerBase

from aiforge.engines.core import TokenEngine
from aiforge.testing.fake_engine import fake_replica, sse_payloads
from aiforge.testing.models import tiny_qwen3
from aiforge.testing.openai_schema import assert_conforms

MODEL = "tiny"
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
_GENERATION_PROMPT = "    {{- '<|im_start|>assistant\\n' }}"
_THINKING_2507_PROMPT = "    {{- '<|im_start|>assistant\\n<think>\\n' }}"

Replica = Callable[[], AbstractAsyncContextManager[httpx.AsyncClient]]


def thinking_2507(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    variant = copy.deepcopy(tokenizer)
    template = str(tokenizer.chat_template)
    assert _GENERATION_PROMPT in template
    variant.chat_template = template.replace(_GENERATION_PROMPT, _THINKING_2507_PROMPT, 1)
    return variant


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_qwen3(tmp_path_factory.mktemp("tiny-thinking"), initializer_range=0.5)


def _replica(engine_factory: Callable[[], TokenEngine], tokenizer: Any) -> Replica:
    @asynccontextmanager
    async def start() -> AsyncIterator[httpx.AsyncClient]:
        engine = engine_factory()
        await engine.start()
        try:
            async with fake_replica(engine, tokenizer, served_model_name=MODEL) as client:
                yield client
        finally:
            await engine.shutdown()

    return start


@pytest.fixture(
    scope="module", params=["transformers", pytest.param("llamacpp", marks=pytest.mark.llamacpp)]
)
def replica(request: pytest.FixtureRequest, model_dir: Path) -> Replica:
    if request.param == "transformers":
        from aiforge.engines.transformers import TransformersTokenEngine
        from aiforge.engines.transformers.loading import load_model

        loaded = load_model(model_dir, dtype="float32")
        return _replica(lambda: TransformersTokenEngine(loaded), thinking_2507(loaded.tokenizer))
    from aiforge.engines.llamacpp.engine import LlamaCppTokenEngine
    from aiforge.engines.llamacpp.loading import load_tokenizer, stop_tokens
    from aiforge.engines.llamacpp.runner import LlamaRunner, RunnerConfig, silence_llama_logs
    from aiforge.testing.gguf import require_llama_cpp, tiny_qwen3_gguf

    require_llama_cpp()
    silence_llama_logs()
    factory: pytest.TempPathFactory = request.getfixturevalue("tmp_path_factory")
    # The path the llama.cpp tests use: one GGUF per session.
    gguf = tiny_qwen3_gguf(factory.getbasetemp() / "tiny-qwen3-gguf")
    tokenizer = load_tokenizer(gguf)
    config = RunnerConfig(gguf, max_model_len=512, max_num_seqs=2, max_batch_tokens=64, threads=2)

    def engine() -> TokenEngine:  # as the replica builds it (build_engine)
        runner = LlamaRunner(config)
        return LlamaCppTokenEngine(runner, eos_token_ids=stop_tokens(runner, tokenizer))

    return _replica(engine, thinking_2507(tokenizer))


def body(**extra: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Pick a colour."}],
        "temperature": 0,
        **extra,
    }


async def test_budget_closes_the_block_and_counts_reasoning_tokens(replica: Replica) -> None:
    async with replica() as client:
        response = await client.post(
            "/v1/chat/completions", json=body(thinking_budget=6, max_tokens=16, logprobs=True)
        )
        unbounded = await client.post("/v1/chat/completions", json=body(max_tokens=16))
    result = response.json()
    assert_conforms("CreateChatCompletionResponse", result)
    usage = result["usage"]
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 6
    assert usage["completion_tokens"] == 16
    # 6 reasoning tokens, then the close the engine forced, then the answer.
    tokens = [t["token"] for t in result["choices"][0]["logprobs"]["content"]]
    assert tokens[6:8] == ["</think>", "\n\n"]
    assert "</think>" not in tokens[:6]
    # Without a budget the random model thinks through all of max_tokens.
    free = unbounded.json()
    assert free["usage"]["completion_tokens_details"]["reasoning_tokens"] == 16
    assert not free["choices"][0]["message"]["content"]


@pytest.mark.parametrize("stream", [False, True])
async def test_structured_output_completes_after_the_budget(replica: Replica, stream: bool) -> None:
    response_format = {"type": "json_schema", "json_schema": {"name": "c", "schema": SCHEMA}}
    request = body(response_format=response_format, thinking_budget=5, max_tokens=64)
    if stream:
        request.update(stream=True, stream_options={"include_usage": True})
    async with replica() as client:
        response = await client.post("/v1/chat/completions", json=request)
    if stream:
        chunks = sse_payloads(response.text)
        deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
        content = "".join(d.get("content", "") for d in deltas)
        finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1]
        usage = chunks[-1]["usage"]
    else:
        result = response.json()
        assert_conforms("CreateChatCompletionResponse", result)
        content, finish = (
            result["choices"][0]["message"]["content"],
            result["choices"][0]["finish_reason"],
        )
        usage = result["usage"]
    assert json.loads(content)["colour"] in {"red", "green"}
    assert finish == "stop"
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 5


async def test_forced_tool_call_completes_after_the_budget(replica: Replica) -> None:
    choice = {"type": "function", "function": {"name": "paint"}}
    async with replica() as client:
        response = await client.post(
            "/v1/chat/completions",
            json=body(tools=TOOLS, tool_choice=choice, thinking_budget=4, max_tokens=64),
        )
    result = response.json()
    assert_conforms("CreateChatCompletionResponse", result)
    (call,) = result["choices"][0]["message"]["tool_calls"]
    assert json.loads(call["function"]["arguments"])["colour"] in {"red", "green"}
    assert result["choices"][0]["finish_reason"] == "tool_calls"
    assert result["usage"]["completion_tokens_details"]["reasoning_tokens"] == 4


async def test_effort_none_closes_the_block_at_once(replica: Replica) -> None:
    async with replica() as client:
        response = await client.post(
            "/v1/chat/completions", json=body(reasoning_effort="none", max_tokens=8)
        )
    result = response.json()
    assert result["usage"]["completion_tokens_details"]["reasoning_tokens"] == 0
    assert "reasoning_content" not in result["choices"][0]["message"]
