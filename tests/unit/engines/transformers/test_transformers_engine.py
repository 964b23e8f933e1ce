"""TransformersTokenEngine on a tiny random Qwen3 (float32): batching, aborts, limits,
embeddings. The model is built once per module (~5 s)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import torch

from aiforge.engines.core import (
    GenerationRequest,
    SamplingParams,
    TokenEngine,
    TokenEvent,
)
from aiforge.engines.transformers import TransformersTokenEngine
from aiforge.engines.transformers.loading import LoadedModel, load_model
from aiforge.testing.fake_engine import BrokenConstraint
from aiforge.testing.models import tiny_qwen3, tiny_qwen3_embedding

PROMPTS = [
    [9707, 11, 1879, 0],
    list(range(1000, 1037)),
    [151644, 872, 198, 9707, 151645, 198, 151644, 77091, 198],
    [42] * 3,
    list(range(5000, 5020)),
]


@pytest.fixture(scope="module")
def chat_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # A larger init range than HF's default makes random logits peaked, so greedy output
    # varies from token to token instead of repeating one token.
    return tiny_qwen3(tmp_path_factory.mktemp("tiny-chat"), initializer_range=0.5)


@pytest.fixture(scope="module")
def chat_model(chat_model_dir: Path) -> LoadedModel:
    return load_model(chat_model_dir, dtype="float32")


@pytest.fixture(scope="module")
def embedding_model(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return load_model(tiny_qwen3_embedding(tmp_path_factory.mktemp("tiny-embed")))


async def _engine(loaded: LoadedModel, **kwargs: int) -> TransformersTokenEngine:
    engine = TransformersTokenEngine(loaded, **kwargs)
    await engine.start()
    return engine


@pytest.fixture
async def engine(chat_model: LoadedModel) -> AsyncIterator[TransformersTokenEngine]:
    engine = await _engine(chat_model, max_num_seqs=3, max_prefill_tokens=16)
    yield engine
    await engine.shutdown()


def _greedy(max_tokens: int, **kwargs: object) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True, **kwargs)  # type: ignore[arg-type]


async def _collect(
    engine: TokenEngine, request_id: str, prompt: list[int], params: SamplingParams,
    start_after: asyncio.Event | None = None,
) -> list[TokenEvent]:  # fmt: skip
    if start_after is not None:
        await start_after.wait()
    return [e async for e in engine.generate(GenerationRequest(request_id, prompt, params))]


def _hf_greedy(loaded: LoadedModel, prompt: list[int], n: int) -> list[int]:
    out = loaded.model.generate(
        torch.tensor([prompt]), max_new_tokens=n, min_new_tokens=n, do_sample=False
    )
    tokens: list[int] = out[0, len(prompt) :].tolist()
    return tokens


def test_engine_satisfies_the_token_engine_protocol(chat_model: LoadedModel) -> None:
    assert isinstance(TransformersTokenEngine(chat_model), TokenEngine)
    assert chat_model.info.max_model_len == 4096
    assert chat_model.info.vocab_size == 151936
    assert chat_model.info.eos_token_ids


async def test_greedy_is_identical_alone_and_in_a_batch_that_joins_and_leaves(
    chat_model: LoadedModel, engine: TransformersTokenEngine
) -> None:
    lengths = [12, 20, 7, 16, 10]
    alone: list[list[int]] = []
    for i, (prompt, n) in enumerate(zip(PROMPTS, lengths, strict=True)):
        events = await _collect(engine, f"alone-{i}", prompt, _greedy(n))
        alone.append([e.token_id for e in events])
    # The reference: plain HF generate, one request at a time.
    assert alone[0] == _hf_greedy(chat_model, PROMPTS[0], lengths[0])
    assert alone[1] == _hf_greedy(chat_model, PROMPTS[1], lengths[1])
    assert len({tuple(t) for t in alone}) == len(alone)

    # Batched: 5 requests over 3 slots, two join only after the first has started
    # streaming, and short ones leave while the long ones keep decoding.
    first_token = asyncio.Event()

    async def first(i: int) -> list[TokenEvent]:
        events = []
        async for event in engine.generate(
            GenerationRequest(f"b-{i}", PROMPTS[i], _greedy(lengths[i]))
        ):
            events.append(event)
            first_token.set()
        return events

    results = await asyncio.gather(
        first(0),
        _collect(engine, "b-1", PROMPTS[1], _greedy(lengths[1])),
        _collect(engine, "b-2", PROMPTS[2], _greedy(lengths[2]), first_token),
        _collect(engine, "b-3", PROMPTS[3], _greedy(lengths[3]), first_token),
        _collect(engine, "b-4", PROMPTS[4], _greedy(lengths[4])),
    )
    batched = [[e.token_id for e in events] for events in results]
    assert batched == alone
    assert all(events[-1].finish_reason == "length" for events in results)
    assert engine.load() == {"running": 0, "waiting": 0}


async def test_closing_the_stream_aborts_and_frees_the_slot(chat_model: LoadedModel) -> None:
    engine = await _engine(chat_model, max_num_seqs=1)
    try:
        stream = engine.generate(GenerationRequest("long", PROMPTS[0], _greedy(2000)))
        assert isinstance(stream, AsyncIterator)
        received = [await anext(stream), await anext(stream)]
        assert received[-1].finish_reason is None
        assert engine.load()["running"] == 1
        await stream.aclose()  # type: ignore[attr-defined]
        # The only slot must come free: the next request runs to completion.
        events = await asyncio.wait_for(
            _collect(engine, "next", PROMPTS[1], _greedy(5)), timeout=30
        )
        assert [e.finish_reason for e in events] == [None] * 4 + ["length"]
        assert engine.load() == {"running": 0, "waiting": 0}
    finally:
        await engine.shutdown()


async def test_stop_token_ids_end_with_stop(engine: TransformersTokenEngine) -> None:
    full = [e.token_id for e in await _collect(engine, "full", PROMPTS[1], _greedy(10))]
    stop_id = full[3]
    events = await _collect(
        engine, "stop", PROMPTS[1], _greedy(10, stop_token_ids=frozenset({stop_id}))
    )
    cut = full.index(stop_id) + 1
    assert [e.token_id for e in events] == full[:cut]
    assert events[-1].finish_reason == "stop"


def _with_info(loaded: LoadedModel, **changes: object) -> LoadedModel:
    return dataclasses.replace(loaded, info=dataclasses.replace(loaded.info, **changes))  # type: ignore[arg-type]


async def test_eos_stops_unless_ignored(chat_model: LoadedModel) -> None:
    probe = await _engine(chat_model, max_num_seqs=2)
    try:
        full = [e.token_id for e in await _collect(probe, "full", PROMPTS[2], _greedy(6))]
    finally:
        await probe.shutdown()
    # Make the model's 2nd greedy token its EOS.
    engine = await _engine(_with_info(chat_model, eos_token_ids=frozenset({full[1]})))
    try:
        stopped = await _collect(engine, "eos", PROMPTS[2], SamplingParams(6, temperature=0.0))
        assert [e.token_id for e in stopped] == full[: full.index(full[1]) + 1]
        assert stopped[-1].finish_reason == "stop"
        ignored = await _collect(engine, "ignore", PROMPTS[2], _greedy(6))
        assert [e.token_id for e in ignored] == full
        assert ignored[-1].finish_reason == "length"
    finally:
        await engine.shutdown()


async def test_max_model_len_gives_length_and_rejects_long_prompts(
    chat_model: LoadedModel,
) -> None:
    engine = await _engine(_with_info(chat_model, max_model_len=16), max_num_seqs=2)
    try:
        events = await _collect(engine, "fits", list(range(100, 110)), _greedy(100))
        assert len(events) == 6
        assert events[-1].finish_reason == "length"
        with pytest.raises(ValueError, match="16"):
            await _collect(engine, "too-long", list(range(16)), _greedy(1))
        with pytest.raises(ValueError, match="prompt"):
            await _collect(engine, "empty", [], _greedy(1))
    finally:
        await engine.shutdown()


async def test_seeded_sampling_is_the_same_alone_and_batched(
    engine: TransformersTokenEngine,
) -> None:
    params = SamplingParams(max_tokens=12, temperature=0.9, top_p=0.95, seed=1234, ignore_eos=True)
    alone = [e.token_id for e in await _collect(engine, "s-alone", PROMPTS[0], params)]
    results = await asyncio.gather(
        _collect(engine, "s-1", PROMPTS[0], params),
        _collect(engine, "s-2", PROMPTS[1], _greedy(8)),
        _collect(engine, "s-3", PROMPTS[3], SamplingParams(max_tokens=9, temperature=1.0)),
    )
    assert [e.token_id for e in results[0]] == alone


async def test_logprobs_and_penalties_flow_through(engine: TransformersTokenEngine) -> None:
    events = await _collect(engine, "lp", PROMPTS[0], _greedy(4, logprobs=3))
    for event in events:
        assert event.logprob is not None
        assert event.logprob <= 0.0
        assert len(event.top_logprobs) == 3
        assert event.top_logprobs[0][0] == event.token_id  # greedy: the top token is sampled
    # A huge frequency penalty forbids repeating any generated token.
    penal = await _collect(engine, "fp", PROMPTS[3], _greedy(12, frequency_penalty=1e4))
    tokens = [e.token_id for e in penal]
    assert len(set(tokens)) == len(tokens) == 12


async def test_constraint_masks_and_finishes(engine: TransformersTokenEngine) -> None:
    class OneOf:
        def __init__(self) -> None:
            self.accepted: list[int] = []

        def mask_logits(self, logits: torch.Tensor) -> None:
            allowed = torch.full_like(logits, float("-inf"))
            allowed[[11, 13]] = 0.0
            logits.add_(allowed)

        def accept(self, token_id: int) -> None:
            self.accepted.append(token_id)

        def is_finished(self) -> bool:
            return len(self.accepted) == 2

    constraint = OneOf()
    request = GenerationRequest("g", PROMPTS[0], _greedy(10), constraint)
    events = [e async for e in engine.generate(request)]
    assert [e.token_id for e in events] == constraint.accepted
    assert set(constraint.accepted) <= {11, 13}
    assert events[-1].finish_reason == "stop"
    assert len(events) == 2


async def test_duplicate_request_id_fails_that_request_only(
    engine: TransformersTokenEngine,
) -> None:
    first = engine.generate(GenerationRequest("dup", PROMPTS[0], _greedy(30)))
    await anext(first)
    with pytest.raises(ValueError, match="duplicate"):
        await _collect(engine, "dup", PROMPTS[1], _greedy(3))
    rest = [e async for e in first]
    assert rest[-1].finish_reason == "length"
    assert len(rest) == 29


async def test_embeddings_are_normalised_deterministic_and_batch_invariant(
    embedding_model: LoadedModel,
) -> None:
    engine = TransformersTokenEngine(embedding_model)
    await engine.start()
    assert engine.info.is_embedding
    assert engine.info.embedding_dim == 64
    inputs = [PROMPTS[0], PROMPTS[1], PROMPTS[3]]
    batch = await engine.embed(inputs)
    alone = [(await engine.embed([ids]))[0] for ids in inputs]
    assert len(batch) == 3
    assert all(len(v) == 64 for v in batch)
    for b, a in zip(batch, alone, strict=True):
        assert float(torch.tensor(b).norm()) == pytest.approx(1.0, abs=1e-5)
        assert torch.allclose(torch.tensor(b), torch.tensor(a), atol=1e-5)
    assert await engine.embed(inputs) == batch
    assert batch[0] != batch[1]
    with pytest.raises(RuntimeError):
        await anext(engine.generate(GenerationRequest("x", [1], _greedy(1))))
    with pytest.raises(ValueError, match="tokens"):
        await engine.embed([[]])
    await engine.shutdown()


def test_detects_embedding_layout(tmp_path: Path) -> None:
    from aiforge.engines.transformers.loading import is_embedding_model, resolve_dtype

    (tmp_path / "config.json").write_text('{"architectures": ["Qwen3ForCausalLM"]}')
    assert not is_embedding_model(tmp_path)
    (tmp_path / "config.json").write_text('{"architectures": ["Qwen3Model"]}')
    assert is_embedding_model(tmp_path)
    assert resolve_dtype("auto", "bfloat16") is torch.bfloat16
    assert resolve_dtype("auto", None) is torch.bfloat16
    assert resolve_dtype("auto", "float32") is torch.float32
    assert resolve_dtype("float32", "bfloat16") is torch.float32
    with pytest.raises(ValueError, match="dtype"):
        resolve_dtype("int3", None)


async def test_replica_build_engine_loads_the_directory(chat_model_dir: Path) -> None:
    from aiforge.engines.server.main import ReplicaArgs
    from aiforge.engines.transformers.__main__ import build_engine

    args = ReplicaArgs(model=chat_model_dir, served_model_name="tiny", max_model_len=64)
    engine, tokenizer = await build_engine(args)
    assert isinstance(engine, TransformersTokenEngine)
    assert engine.info.max_model_len == 64
    assert tokenizer.encode("hello") == [14990]
    await engine.start()
    try:
        prompt = tokenizer.encode("hello world")
        events = await _collect(engine, "r", prompt, _greedy(3))
        assert len(events) == 3
    finally:
        await engine.shutdown()


async def test_bfloat16_embeddings_match_float32_ones(tmp_path: Path) -> None:
    directory = tiny_qwen3_embedding(tmp_path / "embed")
    inputs = [PROMPTS[0], PROMPTS[1]]
    vectors = {}
    for dtype in ("float32", "bfloat16"):
        engine = TransformersTokenEngine(load_model(directory, dtype=dtype))
        await engine.start()
        vectors[dtype] = torch.tensor(await engine.embed(inputs))
        await engine.shutdown()
    cosine = (vectors["float32"] * vectors["bfloat16"]).sum(-1)
    assert torch.all(cosine > 0.99)


@pytest.mark.parametrize(
    "bad",
    [
        GenerationRequest("bad", PROMPTS[0], _greedy(5, seed=1 << 70)),
        GenerationRequest("bad", PROMPTS[0], _greedy(5), constraint=BrokenConstraint()),
        GenerationRequest(
            "bad", PROMPTS[0], SamplingParams(max_tokens=5, temperature=1e-30, ignore_eos=True)
        ),
    ],
    ids=["seed-overflow", "sampling-raises", "tiny-temperature"],
)
async def test_one_failing_request_fails_alone_and_the_loop_goes_on(
    engine: TransformersTokenEngine, bad: GenerationRequest
) -> None:
    async def bad_outcome() -> str:
        try:
            events = await _collect(engine, bad.request_id, bad.prompt_token_ids, bad.params)
        except Exception as exc:  # the failing request may fail, but alone
            return f"failed: {exc}"
        return f"ok: {len(events)}"

    good, outcome = await asyncio.wait_for(
        asyncio.gather(_collect(engine, "good", PROMPTS[1], _greedy(8)), bad_outcome()), 30
    )
    assert [e.finish_reason for e in good][-1] == "length"
    assert outcome.startswith(("failed", "ok"))
    after = await asyncio.wait_for(_collect(engine, "after", PROMPTS[2], _greedy(4)), 30)
    assert len(after) == 4
    assert engine.fatal_error() is None


class _LoopKiller(BaseException):
    """Not an Exception: gets past every ``except Exception`` of the loop."""


async def test_a_dead_loop_fails_requests_fast_and_says_so(
    chat_model: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = await _engine(chat_model, max_num_seqs=2)
    try:
        assert engine.fatal_error() is None
        loop = engine._loop
        assert loop is not None

        def die() -> None:
            raise _LoopKiller("the loop died")

        monkeypatch.setattr(loop, "_step", die)
        with pytest.raises(RuntimeError):
            await asyncio.wait_for(_collect(engine, "victim", PROMPTS[0], _greedy(4)), 10)
        assert engine.fatal_error() is not None
        with pytest.raises(RuntimeError):  # later requests fail at once, never hang
            await asyncio.wait_for(_collect(engine, "later", PROMPTS[1], _greedy(4)), 2)
    finally:
        await engine.shutdown()
