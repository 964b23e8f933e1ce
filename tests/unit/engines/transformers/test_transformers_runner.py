"""ModelRunner on a tiny random Qwen3 (float32): batched, padded prefill and the gathered
LM head give every sequence the same greedy tokens as running it alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiforge.engines.core import GenerationRequest, SamplingParams
from aiforge.engines.transformers.loading import LoadedModel, load_model
from aiforge.engines.transformers.runner import ModelRunner, prefill_groups
from aiforge.engines.transformers.scheduler import PrefillChunk, Scheduler, StopCriteria
from aiforge.testing.models import tiny_qwen3

PROMPTS = [
    [9707, 11, 1879, 0],
    list(range(1000, 1037)),
    [151644, 872, 198, 9707, 151645, 198, 151644, 77091, 198],
    [42] * 3,
    list(range(5000, 5020)),
    [7],
]
NEW_TOKENS = 6


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Peaked random logits (large init range) so greedy tokens vary from step to step.
    return tiny_qwen3(tmp_path_factory.mktemp("tiny-runner"), initializer_range=0.5)


@pytest.fixture(scope="module")
def model(model_dir: Path) -> LoadedModel:
    return load_model(model_dir, dtype="float32")


def _run(
    loaded: LoadedModel,
    prompts: list[list[int]],
    *,
    budget: int,
    split: bool = True,
    upcast: bool = True,
) -> tuple[list[list[int]], list[int]]:
    """Greedy tokens per prompt, all submitted at once; and each step's prefill row count."""
    scheduler = Scheduler(max_num_seqs=len(prompts), max_prefill_tokens=budget)
    runner = ModelRunner(
        loaded.model,
        max_num_seqs=len(prompts),
        max_model_len=256,
        max_prefill_tokens=budget,
        upcast_prefill=upcast,
    )
    if not split:
        runner._split = None  # the whole-model path used for soft-capped heads
    params = SamplingParams(max_tokens=NEW_TOKENS, temperature=0.0, ignore_eos=True)
    for i, prompt in enumerate(prompts):
        runner.add_request(GenerationRequest(f"r{i}", prompt, params))
        scheduler.add(f"r{i}", prompt, StopCriteria(NEW_TOKENS, 256))
    tokens: dict[str, list[int]] = {f"r{i}": [] for i in range(len(prompts))}
    prefill_rows: list[int] = []
    while scheduler.has_unfinished():
        step = scheduler.schedule()
        prefill_rows.append(len(step.prefills))
        result = runner.execute(step)
        for event in scheduler.update_from_output(step, result.token_ids()):
            tokens[event.request_id].append(event.token_id)
    return [tokens[f"r{i}"] for i in range(len(prompts))], prefill_rows


def test_one_padded_prefill_gives_each_prompt_its_tokens_alone(model: LoadedModel) -> None:
    alone = [_run(model, [p], budget=512)[0][0] for p in PROMPTS]
    assert all(len(t) == NEW_TOKENS for t in alone)
    assert len({tuple(t) for t in alone}) == len(alone)
    batched, prefill_rows = _run(model, PROMPTS, budget=512)
    assert prefill_rows[0] == len(PROMPTS)  # everyone admitted in the first step
    assert batched == alone
    unsplit, _ = _run(model, PROMPTS, budget=512, split=False)
    assert unsplit == alone


def test_chunked_prefill_continues_beside_new_prompts(model: LoadedModel) -> None:
    alone = [_run(model, [p], budget=512)[0][0] for p in PROMPTS]
    # A budget of 16 splits the 37- and 20-token prompts, so later chunks (start > 0)
    # share forwards with other prompts' first chunks.
    batched, prefill_rows = _run(model, PROMPTS, budget=16)
    assert max(prefill_rows) > 1
    assert batched == alone


def test_bfloat16_prefills_in_float32_matmuls_alone_and_batched_alike(model_dir: Path) -> None:
    loaded = load_model(model_dir, dtype="bfloat16")
    alone = [_run(loaded, [p], budget=512)[0][0] for p in PROMPTS]
    batched, _ = _run(loaded, PROMPTS, budget=512)
    assert batched == alone
    # Float32 matmuls are a different rounding of the same maths: the first tokens agree
    # with a plain bfloat16 prefill on this peaked model.
    runner = ModelRunner(loaded.model, max_num_seqs=1, max_model_len=64, upcast_prefill=False)
    assert runner._upcast_prefill is False
    plain = [_run(loaded, [p], budget=512, upcast=False)[0][0] for p in PROMPTS]
    assert [t[0] for t in plain] == [t[0] for t in alone]


def _chunk(request_id: str, n: int) -> PrefillChunk:
    return PrefillChunk(request_id, 0, 0, tuple(range(n)), True)


def test_prefill_groups_bound_the_padded_size() -> None:
    chunks = [_chunk("a", 3), _chunk("b", 100), _chunk("c", 4), _chunk("d", 2)]
    groups = prefill_groups(chunks, 64)
    assert [[c.request_id for c in g] for g in groups] == [["b"], ["c", "a", "d"]]
    assert [[c.request_id for c in g] for g in prefill_groups(chunks, 512)] == [
        ["b", "c", "a", "d"]
    ]
    assert prefill_groups([], 64) == []
