"""A vLLM replica serving ``demo-reranker`` (a Qwen3-Reranker-shaped model) for rerank and score.

Started from :class:`VllmEngine`'s launch plan for a reranker spec (``--hf-overrides`` that
read the LM head as a yes/no classifier, the model card's prompt as the score template), so
this checks the flags themselves: vLLM's relevance for each pair must equal the one
aiforge's transformers engine computes for the same model (softmax of "yes" vs "no" after
the same prompt).

Needs the vLLM engine venv: skipped without it, unless ``AIFORGE_REQUIRE_ENGINES`` contains
``vllm``.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from aiforge.cluster.runtimes.local import LocalReplicaProcess, start_replica_process
from aiforge.config import Settings
from aiforge.engines.base import ReplicaSpec
from aiforge.models.demo_reranker import ensure_demo_reranker
from aiforge.testing.engines import vllm_engine_or_skip
from aiforge.testing.server import free_port

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

MODEL_NAME = "demo-reranker"
QUERY = "What is the weather in Paris?"
DOCUMENTS = ["the weather in Paris", "a JSON object", "numbers like 3.14 and 42"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    settings = Settings(cache_dir=tmp_path_factory.mktemp("demo-cache"))
    return ensure_demo_reranker(settings)


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
        is_reranker=True,
    )
    started = time.monotonic()
    process = asyncio.run(
        start_replica_process(
            engine.launch_plan(spec),
            replica_id="vllm-rerank-0",
            url=f"http://127.0.0.1:{port}",
            log_dir=tmp_path_factory.mktemp("vllm-rerank-logs"),
            progress=print,
        )
    )
    print(f"vLLM reranker healthy after {time.monotonic() - started:.0f} s")
    try:
        yield process
    finally:
        process.stop(grace_s=30.0)


def _transformers_relevance(model_dir: Path) -> list[float]:
    from aiforge.engines.transformers.engine import TransformersTokenEngine
    from aiforge.models.reranker import PROMPT_PREFIX, PROMPT_SUFFIX, pair_text

    engine = TransformersTokenEngine.from_pretrained(model_dir, dtype="float32")
    tokenizer = engine.tokenizer
    prompts = [
        tokenizer.encode(PROMPT_PREFIX + pair_text(QUERY, d) + PROMPT_SUFFIX)  # type: ignore[attr-defined]
        for d in DOCUMENTS
    ]
    return asyncio.run(engine.score(prompts))


def test_vllm_reranks_as_the_model_card_scores(
    replica: LocalReplicaProcess, model_dir: Path
) -> None:
    response = httpx.post(
        f"{replica.url}/rerank",
        json={"model": MODEL_NAME, "query": QUERY, "documents": DOCUMENTS},
        timeout=300.0,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    got = {r["index"]: r["relevance_score"] for r in body["results"]}
    expected = _transformers_relevance(model_dir)
    for index, relevance in enumerate(expected):
        assert math.isclose(got[index], relevance, abs_tol=2e-3), (got, expected)
    assert body["usage"]["prompt_tokens"] > 0
    scored = httpx.post(
        f"{replica.url}/score",
        json={"model": MODEL_NAME, "text_1": QUERY, "text_2": DOCUMENTS},
        timeout=300.0,
    )
    assert scored.status_code == 200, scored.text
    assert [round(d["score"], 4) for d in scored.json()["data"]] == [
        round(got[i], 4) for i in range(len(DOCUMENTS))
    ]


def test_vllm_reranker_refuses_chat(replica: LocalReplicaProcess) -> None:
    response = httpx.post(
        f"{replica.url}/v1/chat/completions",
        json={"model": MODEL_NAME, "messages": [{"role": "user", "content": "hi"}]},
        timeout=60.0,
    )
    assert 400 <= response.status_code < 500, response.text
