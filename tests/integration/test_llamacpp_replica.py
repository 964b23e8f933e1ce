"""A llama.cpp replica (``python -m aiforge.engines.llamacpp``) driven with the openai client."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import openai
import pytest

from aiforge.engines.base import ReplicaSpec
from aiforge.engines.llamacpp.launcher import LlamaCppEngine
from aiforge.testing.gguf import require_llama_cpp, tiny_qwen3_gguf
from aiforge.testing.server import free_port

pytestmark = [pytest.mark.llamacpp, pytest.mark.slow]

MODEL = "tiny-qwen3-gguf"


@pytest.fixture(scope="module")
def replica_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A replica serving a tiny random Qwen3 GGUF, started from the engine's launch plan."""
    require_llama_cpp()
    gguf = tiny_qwen3_gguf(tmp_path_factory.getbasetemp() / "tiny-qwen3-gguf")
    port = free_port()
    spec = ReplicaSpec(model_path=gguf, served_model_name=MODEL, port=port, threads=2)
    plan = LlamaCppEngine().launch_plan(spec)
    log_path = tmp_path_factory.mktemp("llamacpp-replica") / "replica.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*plan.argv, "--max-model-len", "512", "--max-num-seqs", "8"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, **plan.env},
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(process, url + plan.health_path, log_path, plan.startup_timeout_s)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def _wait_healthy(process: subprocess.Popen[bytes], url: str, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"replica exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        time.sleep(0.25)
    pytest.fail(f"replica not healthy after {timeout:.0f}s:\n{log.read_text()[-4000:]}")


@pytest.fixture
def client(replica_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=replica_url + "/v1", api_key="unused", max_retries=0) as c:
        yield c


@pytest.fixture
async def async_client(replica_url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=replica_url + "/v1", api_key="unused", max_retries=0
    ) as c:
        yield c


def test_models_lists_the_served_name(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == [MODEL]


def test_chat_completion(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Say hi"}],
        max_tokens=8,
        temperature=0,
    )
    choice = response.choices[0]
    assert choice.finish_reason in {"length", "stop"}
    assert response.usage is not None
    assert 0 < response.usage.completion_tokens <= 8
    assert response.usage.prompt_tokens > 5


def test_streamed_completion_reports_usage(client: openai.OpenAI) -> None:
    stream = client.completions.create(
        model=MODEL,
        prompt="The capital of France is",
        max_tokens=6,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    usage = chunks[-1].usage
    assert usage is not None
    assert usage.completion_tokens == 6
    alone = client.completions.create(
        model=MODEL, prompt="The capital of France is", max_tokens=6, temperature=0
    )
    assert alone.choices[0].text == text
    assert alone.choices[0].finish_reason == "length"


async def test_eight_concurrent_streams_match_their_solo_runs(
    async_client: openai.AsyncOpenAI,
) -> None:
    prompts = [f"Story number {i}: once upon a time" for i in range(8)]

    async def run(prompt: str) -> str:
        stream = await async_client.completions.create(
            model=MODEL, prompt=prompt, max_tokens=16, temperature=0, stream=True
        )
        return "".join([chunk.choices[0].text async for chunk in stream if chunk.choices])

    solo = [await run(prompts[0]), await run(prompts[5])]
    together = await asyncio.gather(*(run(p) for p in prompts))
    assert [together[0], together[5]] == solo


def test_prompt_over_the_context_is_a_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model=MODEL, prompt="hello " * 2000, max_tokens=4)
    assert info.value.status_code == 400
