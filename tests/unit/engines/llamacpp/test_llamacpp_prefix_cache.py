"""Prefix caching in the llama.cpp engine on a tiny random Qwen3 GGUF: greedy output
identical with the cache on and off (sequence adoption and ``llama_memory_seq_cp``),
``cached_prompt_tokens`` exact, eviction under a bound of one sequence, and the hit rate
on the replica's ``/metrics``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aiforge.engines.core import GenerationRequest, SamplingParams, TokenEvent
from aiforge.engines.llamacpp.engine import LlamaCppTokenEngine
from aiforge.engines.llamacpp.loading import load_tokenizer
from aiforge.engines.llamacpp.runner import LlamaRunner, RunnerConfig, silence_llama_logs
from aiforge.testing.fake_engine import fake_replica
from aiforge.testing.gguf import require_llama_cpp

pytestmark = pytest.mark.llamacpp

SYSTEM = list(range(3000, 3045))  # a shared 45-token prefix (two whole blocks and more)


@pytest.fixture(autouse=True)
def _llama_cpp() -> None:
    require_llama_cpp()
    silence_llama_logs()


def _engine(gguf: Path, *, resident: int, max_num_seqs: int = 3) -> LlamaCppTokenEngine:
    config = RunnerConfig(
        gguf,
        max_model_len=256,
        max_num_seqs=max_num_seqs,
        max_batch_tokens=32,  # prompts prefill in chunks, so reuse starts mid-chunk
        threads=2,
        resident_seqs=resident,
    )
    return LlamaCppTokenEngine(LlamaRunner(config))


@pytest.fixture
async def engines(
    tiny_gguf: Path,
) -> AsyncIterator[tuple[LlamaCppTokenEngine, LlamaCppTokenEngine]]:
    """(cache off, cache on)."""
    off, on = _engine(tiny_gguf, resident=0), _engine(tiny_gguf, resident=2)
    await off.start()
    await on.start()
    yield off, on
    await off.shutdown()
    await on.shutdown()


async def _run(
    engine: LlamaCppTokenEngine, rid: str, prompt: list[int], n: int = 6
) -> list[TokenEvent]:
    params = SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True)
    return [event async for event in engine.generate(GenerationRequest(rid, prompt, params))]


def _ids(events: list[TokenEvent]) -> list[int]:
    return [e.token_id for e in events]


async def _chat(engine: LlamaCppTokenEngine, turns: int) -> list[list[TokenEvent]]:
    prompt = [*SYSTEM, 11, 12, 13]
    answers: list[list[TokenEvent]] = []
    for turn in range(turns):
        events = await _run(engine, f"turn{turn}", prompt)
        answers.append(events)
        prompt = [*prompt, *_ids(events), 20 + turn, 21 + turn]
    return answers


async def test_a_chat_reuses_each_turn_and_answers_the_same(
    engines: tuple[LlamaCppTokenEngine, LlamaCppTokenEngine],
) -> None:
    off, on = engines
    expected = await _chat(off, 3)
    got = await _chat(on, 3)
    assert [_ids(a) for a in got] == [_ids(a) for a in expected]
    first_prompt = len(SYSTEM) + 3
    assert [a[0].cached_prompt_tokens for a in got] == [
        0,
        first_prompt + 5,
        first_prompt + 6 + 2 + 5,
    ]
    assert [a[0].cached_prompt_tokens for a in expected] == [0, 0, 0]
    stats = on.prefix_cache_stats()
    assert stats is not None
    assert (stats.queries, stats.hits) == (3, 2)
    assert off.prefix_cache_stats() is None


async def test_concurrent_prompts_sharing_a_prefix_copy_it_and_answer_the_same(
    engines: tuple[LlamaCppTokenEngine, LlamaCppTokenEngine],
) -> None:
    off, on = engines
    prompts = [[*SYSTEM, 100 + i, 200 + i, 300 + i] for i in range(5)]

    async def burst(engine: LlamaCppTokenEngine) -> list[list[TokenEvent]]:
        warm = await _run(engine, "warm", [*SYSTEM, 7, 7])
        rest = await asyncio.gather(*(_run(engine, f"p{i}", p) for i, p in enumerate(prompts)))
        return [warm, *rest]

    expected = await burst(off)
    got = await burst(on)
    assert [_ids(a) for a in got] == [_ids(a) for a in expected]
    assert all(a[0].cached_prompt_tokens >= len(SYSTEM) for a in got[1:4])


async def test_a_bound_of_one_sequence_evicts_and_stays_exact(tiny_gguf: Path) -> None:
    outputs: dict[int, list[list[int]]] = {}
    for resident in (0, 1):
        engine = _engine(tiny_gguf, resident=resident, max_num_seqs=2)
        await engine.start()
        try:
            prompts = {"a": [*SYSTEM, 1], "b": [*reversed(SYSTEM), 2]}
            answers: list[list[int]] = []
            for turn in range(3):
                for name in ("a", "b"):
                    events = await _run(engine, f"{name}{turn}", prompts[name], n=4)
                    answers.append(_ids(events))
                    prompts[name] = [*prompts[name], *_ids(events), 5]
            outputs[resident] = answers
            stats = engine.prefix_cache_stats()
            if resident:
                assert stats is not None
                assert stats.entries == 1
                assert stats.evictions >= 4
        finally:
            await engine.shutdown()
    assert outputs[1] == outputs[0]


async def test_the_replica_reports_cached_tokens_and_the_hit_rate(tiny_gguf: Path) -> None:
    engine = _engine(tiny_gguf, resident=2, max_num_seqs=2)
    messages = [
        {"role": "system", "content": "You are a helpful assistant. " * 20},
        {"role": "user", "content": "Hello there"},
    ]
    body = {"model": "tiny", "max_tokens": 3, "temperature": 0}
    tokenizer = load_tokenizer(tiny_gguf)
    async with fake_replica(engine, tokenizer, served_model_name="tiny") as client:
        first = await client.post("/v1/chat/completions", json={**body, "messages": messages})
        assert first.status_code == 200, first.text
        assert first.json()["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}
        answer = first.json()["choices"][0]["message"]["content"] or "ok"
        turn2 = [
            *messages,
            {"role": "assistant", "content": answer},
            {"role": "user", "content": "And?"},
        ]
        second = await client.post("/v1/chat/completions", json={**body, "messages": turn2})
        assert second.status_code == 200, second.text
        usage = second.json()["usage"]
        cached = usage["prompt_tokens_details"]["cached_tokens"]
        assert 100 < cached < usage["prompt_tokens"]
        metrics = (await client.get("/metrics")).text
    assert 'aiforge_replica_prefix_cache_hits_total{model="tiny"} 1.0' in metrics
    assert "aiforge_replica_prefix_cache_hit_rate" in metrics
