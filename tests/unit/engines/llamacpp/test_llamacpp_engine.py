"""The llama.cpp TokenEngine on a tiny random Qwen3 GGUF: batching, aborts, limits."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest
import torch

from aiforge.engines.core import GenerationRequest, SamplingParams, TokenEvent
from aiforge.engines.llamacpp.engine import LlamaCppTokenEngine
from aiforge.engines.llamacpp.loading import load_tokenizer, stop_tokens
from aiforge.engines.llamacpp.runner import LlamaRunner, RunnerConfig, silence_llama_logs
from aiforge.engines.llamacpp.scheduler import BatchToken, MemoryOp, MoveSequence
from aiforge.testing.fake_engine import BrokenConstraint
from aiforge.testing.gguf import require_llama_cpp

pytestmark = pytest.mark.llamacpp

MAX_MODEL_LEN = 256


@pytest.fixture(autouse=True)
def _llama_cpp() -> None:
    require_llama_cpp()
    silence_llama_logs()


def open_runner(gguf: Path, *, max_num_seqs: int = 4, max_batch_tokens: int = 64) -> LlamaRunner:
    config = RunnerConfig(
        gguf,
        max_model_len=MAX_MODEL_LEN,
        max_num_seqs=max_num_seqs,
        max_batch_tokens=max_batch_tokens,
        threads=2,
    )
    return LlamaRunner(config)


@pytest.fixture
async def engine(tiny_gguf: Path) -> AsyncIterator[LlamaCppTokenEngine]:
    eng = LlamaCppTokenEngine(open_runner(tiny_gguf))
    await eng.start()
    yield eng
    await eng.shutdown()


def request(rid: str, prompt: list[int], **params: object) -> GenerationRequest:
    sampling = SamplingParams(**{"max_tokens": 12, "temperature": 0.0, **params})  # type: ignore[arg-type]
    return GenerationRequest(rid, prompt, sampling)


async def collect(engine: LlamaCppTokenEngine, req: GenerationRequest) -> list[TokenEvent]:
    return [event async for event in engine.generate(req)]


PROMPTS = [
    [9707, 11, 1879, 0, 3555, 374, 279],
    [785, 3974, 13876, 38835, 34208, 916, 279, 15678, 5562, 13, 576],
    list(range(1000, 1040)),
]


def test_llama_cpp_tokenizes_like_hugging_face(tiny_gguf: Path) -> None:
    runner = open_runner(tiny_gguf)
    try:
        tokenizer = load_tokenizer(tiny_gguf)
        text = "<|im_start|>user\nHello, wörld! 123 <think>emoji 🦙</think><|im_end|>\n"
        assert runner.tokenize(text) == tokenizer.encode(text)
        assert runner.n_vocab == 151936
        assert runner.eog_token_ids() >= {151643, 151645, 128247}  # 128247 is "</s>"
        stops = stop_tokens(runner, tokenizer)
        assert {151643, 151645} <= stops
        assert 128247 not in stops  # an ordinary token for Hugging Face: no stop
    finally:
        runner.close()


@pytest.mark.slow  # transformers parses the GGUF's 151,936-token vocabulary in Python
def test_tokenizer_rebuilt_from_gguf_metadata_matches(tiny_gguf: Path, tmp_path: Path) -> None:
    alone = tmp_path / "model.gguf"
    alone.symlink_to(tiny_gguf)
    from_gguf = load_tokenizer(alone)
    from_files = load_tokenizer(tiny_gguf)
    text = "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi there"
    assert from_gguf.encode(text) == from_files.encode(text)


def test_logits_match_transformers_on_the_same_weights(tiny_gguf: Path) -> None:
    from transformers import AutoModelForCausalLM

    prompt = PROMPTS[1]
    model = AutoModelForCausalLM.from_pretrained(tiny_gguf.parent / "hf", dtype=torch.float32)
    with torch.no_grad():
        expected = model(torch.tensor([prompt])).logits[0, -1]
    runner = open_runner(tiny_gguf)
    try:
        last = len(prompt) - 1
        runner.decode([BatchToken(0, t, i, i == last) for i, t in enumerate(prompt)])
        got = runner.logits(last)
    finally:
        runner.close()
    assert got.shape == expected.shape
    # Same weights, same maths; llama.cpp keeps its KV cache in f16, hence the tolerance.
    torch.testing.assert_close(got, expected, atol=1e-3, rtol=1e-3)
    assert int(got.argmax()) == int(expected.argmax())


async def test_greedy_batched_equals_alone_with_joins_and_leaves(
    engine: LlamaCppTokenEngine,
) -> None:
    alone = [
        [e.token_id for e in await collect(engine, request(f"a{i}", p, max_tokens=6 + 6 * i))]
        for i, p in enumerate(PROMPTS)
    ]
    assert [len(tokens) for tokens in alone] == [6, 12, 18]

    async def staggered(i: int) -> list[int]:
        await asyncio.sleep(0.05 * i)  # later requests join a running batch
        events = await collect(engine, request(f"b{i}", PROMPTS[i], max_tokens=6 + 6 * i))
        return [e.token_id for e in events]

    batched = await asyncio.gather(*(staggered(i) for i in range(3)))
    assert batched == alone


class RecordingRunner(LlamaRunner):
    """The real runner, keeping a list of the KV changes it made."""

    def __init__(self, config: RunnerConfig) -> None:
        super().__init__(config)
        self.ops: list[MemoryOp] = []

    def apply(self, ops: Iterable[MemoryOp]) -> None:
        ops = list(ops)
        self.ops += ops
        super().apply(ops)


async def test_a_sequence_moved_to_close_a_gap_answers_the_same(
    tiny_gguf: Path, engine: LlamaCppTokenEngine
) -> None:
    """The middle sequence finishes first; the last one moves into its id (a KV stream
    copy in llama.cpp) so the batch stays one run, and still decodes what it would alone."""
    lengths = (18, 4, 18)
    alone = [
        [e.token_id for e in await collect(engine, request(f"a{i}", p, max_tokens=n))]
        for i, (p, n) in enumerate(zip(PROMPTS, lengths, strict=True))
    ]
    config = RunnerConfig(tiny_gguf, max_model_len=MAX_MODEL_LEN, max_num_seqs=4, threads=2)
    runner = RecordingRunner(config)
    eng = LlamaCppTokenEngine(runner)
    await eng.start()
    try:
        together = await asyncio.gather(
            *(
                collect(eng, request(f"b{i}", p, max_tokens=n))
                for i, (p, n) in enumerate(zip(PROMPTS, lengths, strict=True))
            )
        )
    finally:
        await eng.shutdown()
    assert [[e.token_id for e in events] for events in together] == alone
    assert MoveSequence(src=2, dst=1) in runner.ops


async def test_a_resident_entry_moved_out_of_the_way_is_reused_exactly(
    tiny_gguf: Path, engine: LlamaCppTokenEngine
) -> None:
    """a runs at id 0 all along; b's finished sequence stays resident at id 1, in the way
    of c joining beside a: the entry moves to a free id (a KV stream copy) and d, which
    continues b's conversation, still reuses it and answers as without any cache."""
    b = [*range(1000, 1040), 7]
    c = list(range(2000, 2030))
    ask = {"b": b, "c": c}
    alone = {
        k: [e.token_id for e in await collect(engine, request(k, p, max_tokens=4))]
        for k, p in ask.items()
    }
    ask["d"] = [*b, *alone["b"], 9, 9]
    alone["d"] = [e.token_id for e in await collect(engine, request("d", ask["d"], max_tokens=4))]
    config = RunnerConfig(
        tiny_gguf, max_model_len=MAX_MODEL_LEN, max_num_seqs=2, threads=2, resident_seqs=2
    )
    runner = RecordingRunner(config)
    eng = LlamaCppTokenEngine(runner)
    await eng.start()
    try:
        background = asyncio.create_task(collect(eng, request("a", [5, 6, 7], max_tokens=240)))
        await asyncio.sleep(0.05)
        got: dict[str, list[TokenEvent]] = {}
        for name in ("b", "c", "d"):
            got[name] = await collect(eng, request(name, ask[name], max_tokens=4))
        assert not background.done(), "a must run beside them all along"
        background.cancel()
    finally:
        await eng.shutdown()
    assert {k: [e.token_id for e in events] for k, events in got.items()} == alone
    assert MoveSequence(src=1, dst=3) in runner.ops  # b's entry, out of c's way
    assert got["d"][0].cached_prompt_tokens == len(b) + 3  # its prompt and 3 of 4 answers


async def test_more_requests_than_sequences_wait_their_turn(tiny_gguf: Path) -> None:
    eng = LlamaCppTokenEngine(open_runner(tiny_gguf, max_num_seqs=2))
    await eng.start()
    try:
        alone = [e.token_id for e in await collect(eng, request("x", PROMPTS[0], max_tokens=5))]
        results = await asyncio.gather(
            *(collect(eng, request(f"r{i}", PROMPTS[0], max_tokens=5)) for i in range(5))
        )
        assert all([e.token_id for e in events] == alone for events in results)
        assert eng.load() == {"running": 0, "waiting": 0}
    finally:
        await eng.shutdown()


async def test_abort_frees_the_sequence_kv(engine: LlamaCppTokenEngine) -> None:
    stream = engine.generate(request("gone", PROMPTS[2], max_tokens=200))
    received = 0
    async with contextlib.aclosing(stream):
        async for _ in stream:
            received += 1
            if received == 3:
                break
    for _ in range(200):
        if engine.load()["running"] == 0:
            break
        await asyncio.sleep(0.01)
    assert engine.load() == {"running": 0, "waiting": 0}
    assert engine.runner.cached_positions(0) == 0
    # The freed sequence id serves the next request from a clean cache.
    after = await collect(engine, request("next", PROMPTS[0], max_tokens=4))
    assert len(after) == 4


async def test_max_tokens_ends_with_length(engine: LlamaCppTokenEngine) -> None:
    events = await collect(engine, request("len", PROMPTS[0], max_tokens=5))
    assert [e.finish_reason for e in events] == [None, None, None, None, "length"]


async def test_stop_token_ids_end_with_stop(engine: LlamaCppTokenEngine) -> None:
    free = await collect(engine, request("free", PROMPTS[1], max_tokens=10))
    stop_at = free[3].token_id
    first = next(i for i, e in enumerate(free) if e.token_id == stop_at)
    params = {"max_tokens": 10, "stop_token_ids": frozenset({stop_at})}
    stopped = await collect(engine, request("stop", PROMPTS[1], **params))
    assert [e.token_id for e in stopped] == [e.token_id for e in free[: first + 1]]
    assert stopped[-1].finish_reason == "stop"


async def test_context_end_gives_length(engine: LlamaCppTokenEngine) -> None:
    prompt = list(range(2000, 2000 + MAX_MODEL_LEN - 4))
    events = await collect(engine, request("ctx", prompt, max_tokens=100))
    assert len(events) == 4
    assert events[-1].finish_reason == "length"


async def test_prompt_longer_than_context_is_refused(engine: LlamaCppTokenEngine) -> None:
    with pytest.raises(ValueError, match="context holds 256"):
        await collect(engine, request("long", list(range(MAX_MODEL_LEN)), max_tokens=1))


async def test_seeded_sampling_is_the_same_batched_or_alone(engine: LlamaCppTokenEngine) -> None:
    params = {"temperature": 1.0, "seed": 1234, "max_tokens": 8}
    alone = [e.token_id for e in await collect(engine, request("s", PROMPTS[0], **params))]
    together = await asyncio.gather(
        collect(engine, request("s1", PROMPTS[0], **params)),
        collect(engine, request("s2", PROMPTS[1], temperature=1.0, max_tokens=8)),
    )
    assert [e.token_id for e in together[0]] == alone


async def test_logprobs_report_the_greedy_token_first(engine: LlamaCppTokenEngine) -> None:
    events = await collect(engine, request("lp", PROMPTS[0], max_tokens=3, logprobs=2))
    for event in events:
        assert event.logprob is not None
        assert len(event.top_logprobs) == 2
        assert event.top_logprobs[0][0] == event.token_id
        assert event.top_logprobs[0][1] == pytest.approx(event.logprob)


class OnlyTokens:
    """A real TokenConstraint: allows a fixed token set and completes after ``length``."""

    def __init__(self, allowed: set[int], length: int) -> None:
        self.allowed = torch.tensor(sorted(allowed))
        self.length = length
        self.accepted: list[int] = []

    def mask_logits(self, logits: torch.Tensor) -> None:
        keep = logits[self.allowed].clone()
        logits.fill_(float("-inf"))
        logits[self.allowed] = keep

    def accept(self, token_id: int) -> None:
        self.accepted.append(token_id)

    def is_finished(self) -> bool:
        return len(self.accepted) >= self.length


async def test_constraint_masks_and_finishes(engine: LlamaCppTokenEngine) -> None:
    constraint = OnlyTokens({100, 200, 300}, length=3)
    req = GenerationRequest("c", PROMPTS[0], SamplingParams(max_tokens=10), constraint)
    events = await collect(engine, req)
    assert [e.token_id for e in events] == constraint.accepted
    assert {e.token_id for e in events} <= {100, 200, 300}
    assert events[-1].finish_reason == "stop"
    assert len(events) == 3


async def test_shutdown_ends_open_streams_without_a_finish_reason(tiny_gguf: Path) -> None:
    eng = LlamaCppTokenEngine(open_runner(tiny_gguf))
    await eng.start()
    stream = eng.generate(request("open", PROMPTS[2], max_tokens=MAX_MODEL_LEN))
    first = await anext(stream)
    assert first.finish_reason is None
    await eng.shutdown()
    rest = [e async for e in stream]
    assert all(e.finish_reason is None for e in rest)
    with pytest.raises(RuntimeError, match="not running"):
        await collect(eng, request("late", PROMPTS[0]))


@pytest.mark.parametrize(
    "bad",
    [
        request("bad", PROMPTS[0], seed=1 << 70),
        GenerationRequest(
            "bad", PROMPTS[0], SamplingParams(max_tokens=5), constraint=BrokenConstraint()
        ),
        request("bad", PROMPTS[0], temperature=1e-30),
    ],
    ids=["seed-overflow", "sampling-raises", "tiny-temperature"],
)
async def test_one_failing_request_fails_alone_and_the_loop_goes_on(
    engine: LlamaCppTokenEngine, bad: GenerationRequest
) -> None:
    async def bad_outcome() -> str:
        try:
            events = await collect(engine, bad)
        except Exception as exc:  # the failing request may fail, but alone
            return f"failed: {exc}"
        return f"ok: {len(events)}"

    good, outcome = await asyncio.wait_for(
        asyncio.gather(collect(engine, request("good", PROMPTS[1], max_tokens=8)), bad_outcome()),
        30,
    )
    assert len(good) == 8
    assert outcome.startswith(("failed", "ok"))
    after = await asyncio.wait_for(collect(engine, request("after", PROMPTS[2], max_tokens=4)), 30)
    assert len(after) == 4
    assert engine.fatal_error() is None


class _LoopKiller(BaseException):
    """Not an Exception: gets past every ``except Exception`` of the loop."""


async def test_a_dead_loop_fails_requests_fast_and_says_so(
    engine: LlamaCppTokenEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert engine.fatal_error() is None

    def die(plan: object) -> None:
        raise _LoopKiller("the loop died")

    monkeypatch.setattr(engine, "_step", die)
    with pytest.raises(RuntimeError):
        await asyncio.wait_for(collect(engine, request("victim", PROMPTS[0])), 10)
    assert engine.fatal_error() is not None
    with pytest.raises(RuntimeError):  # later requests fail at once, never hang
        await asyncio.wait_for(collect(engine, request("later", PROMPTS[1])), 2)
