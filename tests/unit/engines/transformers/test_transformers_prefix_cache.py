"""Prefix caching in the transformers engine, on a tiny random Qwen3 (float32): greedy
output identical with the cache on and off, ``cached_prompt_tokens`` exact, eviction
under a bound of one sequence, and the hit rate on the replica's ``/metrics``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aiforge.engines.core import GenerationRequest, SamplingParams, TokenEvent
from aiforge.engines.transformers import TransformersTokenEngine
from aiforge.engines.transformers.loading import LoadedModel, load_model
from aiforge.testing.fake_engine import fake_replica
from aiforge.testing.models import tiny_qwen3

SYSTEM = list(range(3000, 3045))  # a shared 45-token prefix (two whole blocks and more)


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    model_dir = tiny_qwen3(tmp_path_factory.mktemp("tiny-chat"), initializer_range=0.5)
    return load_model(model_dir, dtype="float32")


@pytest.fixture
async def engines(
    chat_model: LoadedModel,
) -> AsyncIterator[tuple[TransformersTokenEngine, TransformersTokenEngine]]:
    """(cache off, cache on); chunked prefill (16 tokens a step) so reuse starts mid-chunk."""
    off = TransformersTokenEngine(
        chat_model, max_num_seqs=3, max_prefill_tokens=16, prefix_cache_sequences=0
    )
    on = TransformersTokenEngine(
        chat_model, max_num_seqs=3, max_prefill_tokens=16, prefix_cache_sequences=2
    )
    await off.start()
    await on.start()
    yield off, on
    await off.shutdown()
    await on.shutdown()


def _greedy(max_tokens: int) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)


async def _run(
    engine: TransformersTokenEngine, rid: str, prompt: list[int], n: int = 6
) -> list[TokenEvent]:
    request = GenerationRequest(rid, prompt, _greedy(n))
    return [event async for event in engine.generate(request)]


def _ids(events: list[TokenEvent]) -> list[int]:
    return [e.token_id for e in events]


async def _chat(engine: TransformersTokenEngine, turns: int) -> list[list[TokenEvent]]:
    """A conversation: each turn's prompt is the last prompt, its answer and a new message."""
    prompt = [*SYSTEM, 11, 12, 13]
    answers: list[list[TokenEvent]] = []
    for turn in range(turns):
        events = await _run(engine, f"turn{turn}", prompt)
        answers.append(events)
        prompt = [*prompt, *_ids(events), 20 + turn, 21 + turn]
    return answers


async def test_a_chat_reuses_each_turn_and_answers_the_same(
    engines: tuple[TransformersTokenEngine, TransformersTokenEngine],
) -> None:
    off, on = engines
    expected = await _chat(off, 3)
    got = await _chat(on, 3)
    assert [_ids(a) for a in got] == [_ids(a) for a in expected]
    assert [a[0].cached_prompt_tokens for a in expected] == [0, 0, 0]
    # Turn t reuses turn t-1's prompt and all but the last answer token (never computed).
    first_prompt = len(SYSTEM) + 3
    assert [a[0].cached_prompt_tokens for a in got] == [
        0,
        first_prompt + 5,
        first_prompt + 6 + 2 + 5,
    ]
    assert all(e.cached_prompt_tokens == 0 for a in got for e in a[1:])
    stats = on.prefix_cache_stats()
    assert stats is not None
    assert (stats.queries, stats.hits) == (3, 2)
    assert off.prefix_cache_stats() is None


async def test_concurrent_prompts_sharing_a_prefix_answer_the_same(
    engines: tuple[TransformersTokenEngine, TransformersTokenEngine],
) -> None:
    off, on = engines
    prompts = [[*SYSTEM, 100 + i, 200 + i, 300 + i] for i in range(5)]

    async def burst(engine: TransformersTokenEngine) -> list[list[TokenEvent]]:
        warm = await _run(engine, "warm", [*SYSTEM, 7, 7])  # leaves the system prompt's KV
        rest = await asyncio.gather(*(_run(engine, f"p{i}", p) for i, p in enumerate(prompts)))
        return [warm, *rest]

    expected = await burst(off)
    got = await burst(on)
    assert [_ids(a) for a in got] == [_ids(a) for a in expected]
    assert all(a[0].cached_prompt_tokens >= len(SYSTEM) for a in got[1:4])


async def test_a_bound_of_one_sequence_evicts_and_stays_exact(chat_model: LoadedModel) -> None:
    """Two conversations taking turns in an engine that keeps one finished sequence: each
    turn evicts the other conversation's KV, and nothing goes wrong."""
    outputs: dict[int, list[list[int]]] = {}
    for sequences in (0, 1):
        engine = TransformersTokenEngine(
            chat_model, max_num_seqs=2, max_prefill_tokens=16, prefix_cache_sequences=sequences
        )
        await engine.start()
        try:
            prompts = {"a": [*SYSTEM, 1], "b": [*reversed(SYSTEM), 2]}
            answers: list[list[int]] = []
            for turn in range(3):
                for name in ("a", "b"):
                    events = await _run(engine, f"{name}{turn}", prompts[name], n=4)
                    answers.append(_ids(events))
                    prompts[name] = [*prompts[name], *_ids(events), 5]
            outputs[sequences] = answers
            stats = engine.prefix_cache_stats()
            if sequences:
                assert stats is not None
                assert stats.entries == 1
                assert stats.evictions >= 4
        finally:
            await engine.shutdown()
    assert outputs[1] == outputs[0]


async def test_the_replica_reports_cached_tokens_and_the_hit_rate(
    chat_model: LoadedModel,
) -> None:
    engine = TransformersTokenEngine(chat_model, max_num_seqs=2, prefix_cache_sequences=2)
    messages = [
        {"role": "system", "content": "You are a helpful assistant. " * 20},
        {"role": "user", "content": "Hello there"},
    ]
    body = {"model": "tiny", "max_tokens": 3, "temperature": 0}
    async with fake_replica(engine, chat_model.tokenizer, served_model_name="tiny") as client:
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
    rate = next(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("aiforge_replica_prefix_cache_hit_rate{")
    )
    assert rate == pytest.approx(
        cached / (first.json()["usage"]["prompt_tokens"] + usage["prompt_tokens"])
    )


def test_engine_model_dir_fixture_is_float32(chat_model: LoadedModel, tmp_path: Path) -> None:
    assert next(chat_model.model.parameters()).dtype.is_floating_point
