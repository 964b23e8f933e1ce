"""The llama.cpp batch scheduler: pure, no llama.cpp needed."""

from __future__ import annotations

import random

import pytest

from aiforge.engines.core import TokenEvent
from aiforge.engines.llamacpp.scheduler import (
    BatchScheduler,
    BatchToken,
    CopyPrefix,
    KeepPrefix,
    MoveSequence,
    SampledOutput,
    SequenceSpec,
    StepPlan,
)
from aiforge.engines.prefix_cache import PrefixCache, PrefixCacheStats

EOS = 99


def spec(rid: str, prompt: list[int], max_tokens: int = 10) -> SequenceSpec:
    return SequenceSpec(rid, tuple(prompt), max_tokens, frozenset({EOS}))


def sampler(plan: StepPlan, token: int = 7) -> list[SampledOutput]:
    return [SampledOutput(rid, token) for rid, _ in plan.sample]


def test_prefill_then_decode_positions() -> None:
    sched = BatchScheduler(max_num_seqs=2, max_batch_tokens=16, max_model_len=64)
    sched.add(spec("a", [1, 2, 3]))
    plan = sched.schedule()
    assert plan.tokens == (
        BatchToken(0, 1, 0, False),
        BatchToken(0, 2, 1, False),
        BatchToken(0, 3, 2, True),
    )
    assert plan.sample == (("a", 2),)
    events = sched.update_from_output([SampledOutput("a", 42)])
    assert [(e.request_id, e.event.token_id, e.event.finish_reason) for e in events] == [
        ("a", 42, None)
    ]
    plan = sched.schedule()
    assert plan.tokens == (BatchToken(0, 42, 3, True),)
    assert plan.sample == (("a", 0),)


def test_request_joins_running_batch_at_token_boundary() -> None:
    sched = BatchScheduler(max_num_seqs=4, max_batch_tokens=16, max_model_len=64)
    sched.add(spec("a", [1, 2]))
    sched.update_from_output(sampler(sched.schedule()))
    sched.add(spec("b", [5, 6, 7]))
    plan = sched.schedule()
    # a decodes one token while b prefills in the same batch, with its own sequence id.
    assert plan.tokens[0] == BatchToken(0, 7, 2, True)
    assert [t.seq_id for t in plan.tokens[1:]] == [1, 1, 1]
    assert plan.sample == (("a", 0), ("b", 3))
    assert sched.num_running == 2


def test_prefill_is_chunked_by_the_batch_budget_and_decode_goes_first() -> None:
    sched = BatchScheduler(max_num_seqs=2, max_batch_tokens=4, max_model_len=64)
    sched.add(spec("a", [1]))
    sched.update_from_output(sampler(sched.schedule()))
    sched.add(spec("b", list(range(10, 20))))
    first = sched.schedule()
    assert len(first.tokens) == 4
    assert first.sample == (("a", 0),)  # b's chunk ends mid-prompt: no logits yet
    assert [t.position for t in first.tokens[1:]] == [0, 1, 2]
    sched.update_from_output(sampler(first))
    second = sched.schedule()
    assert [t.position for t in second.tokens[1:]] == [3, 4, 5]
    sched.update_from_output(sampler(second))
    third = sched.schedule()
    assert [t.position for t in third.tokens[1:]] == [6, 7, 8]
    sched.update_from_output(sampler(third))
    fourth = sched.schedule()
    assert [t.position for t in fourth.tokens[1:]] == [9]
    assert fourth.sample == (("a", 0), ("b", 1))


def test_waiting_until_a_sequence_id_frees_up() -> None:
    sched = BatchScheduler(max_num_seqs=1, max_batch_tokens=8, max_model_len=64)
    sched.add(spec("a", [1], max_tokens=2))
    sched.add(spec("b", [2]))
    plan = sched.schedule()
    assert {t.seq_id for t in plan.tokens} == {0}
    assert sched.num_waiting == 1
    sched.update_from_output(sampler(plan))
    events = sched.update_from_output(sampler(sched.schedule()))
    assert events[0].event.finish_reason == "length"
    plan = sched.schedule()
    # a left: its KV is cleared before b reuses sequence id 0 in the same step.
    assert plan.released_seq_ids == (0,)
    assert plan.tokens == (BatchToken(0, 2, 0, True),)


def test_batches_are_in_ascending_sequence_id_order_after_ids_are_reused() -> None:
    """llama.cpp runs a batch as one pass only when its sequence ids ascend consecutively."""
    sched = BatchScheduler(max_num_seqs=4, max_batch_tokens=16, max_model_len=64)
    for rid, max_tokens in zip("abcd", (1, 1, 9, 9), strict=True):
        sched.add(spec(rid, [1], max_tokens=max_tokens))
    sched.update_from_output(sampler(sched.schedule()))  # a and b finish: ids 0 and 1 free
    sched.add(spec("e", [2, 3]))
    sched.add(spec("f", [4]))
    plan = sched.schedule()  # running in arrival order: c (2), d (3), e, f
    assert sched.running_seq_ids() == {"c": 2, "d": 3, "e": 0, "f": 1}  # lowest ids first
    assert [t.seq_id for t in plan.tokens] == [0, 0, 1, 2, 3]
    for rid, index in plan.sample:  # every sample index still points at its own sequence
        assert plan.tokens[index].seq_id == sched.running_seq_ids()[rid]
        assert plan.tokens[index].wants_logits
    assert len(plan.sample) == 4


def test_stop_token_and_constraint_finish_with_stop() -> None:
    sched = BatchScheduler(max_num_seqs=2, max_batch_tokens=8, max_model_len=64)
    sched.add(spec("a", [1]))
    sched.add(spec("b", [2]))
    plan = sched.schedule()
    events = sched.update_from_output(
        [SampledOutput("a", EOS), SampledOutput("b", 5, constraint_finished=True)]
    )
    assert [e.event.finish_reason for e in events] == ["stop", "stop"]
    assert plan.has_work
    assert not sched.has_unfinished
    assert sorted(sched.schedule().released_seq_ids) == [0, 1]


def test_max_model_len_ends_with_length() -> None:
    sched = BatchScheduler(max_num_seqs=1, max_batch_tokens=8, max_model_len=4)
    sched.add(spec("a", [1, 2, 3], max_tokens=100))
    events = sched.update_from_output(sampler(sched.schedule()))
    assert events[0].event.finish_reason == "length"


def test_abort_running_releases_its_kv_and_ignores_late_outputs() -> None:
    sched = BatchScheduler(max_num_seqs=2, max_batch_tokens=8, max_model_len=64)
    sched.add(spec("a", [1]))
    sched.add(spec("b", [2]))
    plan = sched.schedule()
    assert sched.abort("a")
    events = sched.update_from_output(sampler(plan))
    assert [e.request_id for e in events] == ["b"]
    nxt = sched.schedule()
    assert nxt.released_seq_ids == (0,)
    assert [t.seq_id for t in nxt.tokens] == [1]
    assert not sched.abort("a")


def test_abort_waiting_and_abort_all() -> None:
    sched = BatchScheduler(max_num_seqs=1, max_batch_tokens=8, max_model_len=64)
    sched.add(spec("a", [1]))
    sched.add(spec("b", [2]))
    sched.add(spec("c", [3]))
    sched.schedule()
    assert sched.abort("b")
    assert sched.abort_all() == ["a", "c"]
    assert not sched.has_unfinished
    assert sched.schedule().released_seq_ids == (0,)


@pytest.mark.parametrize(
    ("prompt", "max_tokens", "message"),
    [([], 4, "at least one token"), ([1] * 8, 4, "context holds 8"), ([1], 0, "max_tokens")],
)
def test_add_rejects_what_cannot_run(prompt: list[int], max_tokens: int, message: str) -> None:
    sched = BatchScheduler(max_num_seqs=1, max_batch_tokens=8, max_model_len=8)
    with pytest.raises(ValueError, match=message):
        sched.add(spec("a", prompt, max_tokens))


def test_batch_budget_must_fit_one_token_per_sequence() -> None:
    with pytest.raises(ValueError, match="max_batch_tokens"):
        BatchScheduler(max_num_seqs=8, max_batch_tokens=4, max_model_len=64)


# -- prefix caching -------------------------------------------------------------------

BLOCK = 4


class _FakeMemory:
    """llama.cpp's KV as the scheduler sees it: each sequence id's tokens by position,
    checked the way llama_decode checks them (a sequence's positions stay consecutive)."""

    def __init__(self, num_seq_ids: int) -> None:
        self.seqs: list[list[int]] = [[] for _ in range(num_seq_ids)]

    def apply(self, plan: StepPlan) -> None:
        for op in plan.memory:
            if isinstance(op, CopyPrefix):
                assert self.seqs[op.dst] == [], "copies go into an empty sequence"
                assert len(self.seqs[op.src]) >= op.length
                self.seqs[op.dst] = self.seqs[op.src][: op.length]
            elif isinstance(op, MoveSequence):
                assert self.seqs[op.dst] == [], "moves go into an empty sequence"
                self.seqs[op.dst], self.seqs[op.src] = self.seqs[op.src], []
            else:
                del self.seqs[op.seq_id][op.length :]
        for token in plan.tokens:
            assert token.position == len(self.seqs[token.seq_id]), "positions consecutive"
            self.seqs[token.seq_id].append(token.token_id)


def _cached(max_num_seqs: int, entries: int, batch: int = 64) -> BatchScheduler:
    cache = PrefixCache(max_entries=entries, block_size=BLOCK)
    return BatchScheduler(
        max_num_seqs=max_num_seqs, max_batch_tokens=batch, max_model_len=256, prefix_cache=cache
    )


def _check(sched: BatchScheduler, memory: _FakeMemory) -> None:
    for seq in sched._running.values():
        expected = [*seq.spec.prompt_token_ids, *seq.output][: seq.num_computed]
        assert memory.seqs[seq.seq_id] == expected
    cache = sched._cache
    assert cache is not None
    assert len(cache) <= cache.max_entries
    running = set(sched.running_seq_ids().values())
    for loc in cache.locations():
        assert loc not in running
        assert tuple(memory.seqs[loc]) == cache._entries[loc].tokens


def _assert_consecutive(sched: BatchScheduler, plan: StepPlan) -> None:
    """One pass over the weights: the running ids, and so the batch's, are one run."""
    ids = sorted(sched.running_seq_ids().values())
    assert ids == list(range(ids[0], ids[0] + len(ids))) if ids else True
    assert [t.seq_id for t in plan.tokens] == sorted(t.seq_id for t in plan.tokens)


def _step(sched: BatchScheduler, memory: _FakeMemory, token: int) -> list[TokenEvent]:
    plan = sched.schedule()
    _assert_consecutive(sched, plan)
    memory.apply(plan)
    events = sched.update_from_output(sampler(plan, token))
    _check(sched, memory)
    return [e.event for e in events]


def test_a_second_turn_adopts_the_first_turn_sequence() -> None:
    sched = _cached(max_num_seqs=2, entries=2)
    memory = _FakeMemory(sched.num_seq_ids)
    turn1 = list(range(10))
    sched.add(spec("t1", turn1, max_tokens=3))
    for _ in range(3):
        _step(sched, memory, token=50)
    sched.add(spec("t2", [*turn1, 50, 50, 50, 7]))
    plan = sched.schedule()
    assert plan.memory == ()  # the whole entry is reused under its own id: nothing to do
    assert [(t.seq_id, t.position, t.token_id) for t in plan.tokens] == [
        (0, 12, 50),
        (0, 13, 7),
    ]
    memory.apply(plan)
    (event,) = [e.event for e in sched.update_from_output(sampler(plan))]
    assert event.cached_prompt_tokens == 12


def test_a_partial_match_copies_and_keeps_the_entry() -> None:
    sched = _cached(max_num_seqs=2, entries=2)
    memory = _FakeMemory(sched.num_seq_ids)
    system = list(range(8))
    sched.add(spec("a", [*system, 1, 1], max_tokens=1))
    _step(sched, memory, token=5)
    sched.add(spec("b", [*system, 2, 2], max_tokens=1))
    plan = sched.schedule()
    assert plan.memory == (CopyPrefix(src=0, dst=1, length=8),)
    memory.apply(plan)
    (event,) = [e.event for e in sched.update_from_output(sampler(plan))]
    assert event.cached_prompt_tokens == 8
    _check(sched, memory)
    assert sched.prefix_cache_stats() == PrefixCacheStats(
        queries=2, hits=1, queried_tokens=20, hit_tokens=8, entries=2, max_entries=2
    )


def test_eviction_clears_the_evicted_sequence_before_its_id_is_reused() -> None:
    sched = _cached(max_num_seqs=1, entries=1)
    memory = _FakeMemory(sched.num_seq_ids)
    sched.add(spec("a", list(range(8)), max_tokens=1))
    _step(sched, memory, token=5)
    sched.add(spec("b", list(range(100, 108)), max_tokens=1))
    _step(sched, memory, token=5)  # b runs under the free id; its entry evicts a's
    sched.add(spec("c", list(range(200, 208)), max_tokens=1))
    plan = sched.schedule()
    assert plan.memory == (KeepPrefix(0, 0),)  # a's id was free; nothing of b is lost
    memory.apply(plan)


def test_clearing_releases_every_entry() -> None:
    sched = _cached(max_num_seqs=1, entries=2)
    memory = _FakeMemory(sched.num_seq_ids)
    sched.add(spec("a", list(range(8)), max_tokens=1))
    _step(sched, memory, token=5)
    sched.clear_prefix_cache()
    plan = sched.schedule()
    assert plan.released_seq_ids == (0,)
    assert BatchScheduler(max_num_seqs=1, max_batch_tokens=8, max_model_len=8).num_seq_ids == 1


@pytest.mark.parametrize(("max_num_seqs", "entries", "batch"), [(1, 1, 64), (3, 1, 8), (3, 4, 12)])
def test_random_traffic_keeps_every_sequence_exact(
    max_num_seqs: int, entries: int, batch: int
) -> None:
    """Requests sharing prefixes join, finish and abort at random; after every step each
    running sequence and each resident entry holds exactly its tokens, and reuse happens."""
    rng = random.Random(max_num_seqs * 100 + entries)
    sched = _cached(max_num_seqs, entries, batch)
    memory = _FakeMemory(sched.num_seq_ids)
    prefixes = [[rng.randrange(1000) for _ in range(rng.randrange(4, 20))] for _ in range(3)]
    cached = 0
    for i in range(300):
        if rng.random() < 0.6:
            tail = [rng.randrange(1000) for _ in range(rng.randrange(1, 6))]
            sched.add(spec(f"r{i}", [*rng.choice(prefixes), *tail], rng.randrange(1, 6)))
        running = list(sched.running_seq_ids())
        if rng.random() < 0.05 and running:
            sched.abort(rng.choice(running))
            _check(sched, memory)
        cached += sum(e.cached_prompt_tokens for e in _step(sched, memory, rng.randrange(1000)))
    assert cached > 0


# -- consecutive sequence ids ----------------------------------------------------------


def _two_waves(max_num_seqs: int) -> tuple[BatchScheduler, StepPlan]:
    """8 streams finish (4 stay resident), then 8 more join: the second wave's plan."""
    sched = _cached(max_num_seqs=max_num_seqs, entries=4)
    memory = _FakeMemory(sched.num_seq_ids)
    for i in range(8):
        sched.add(spec(f"w1-{i}", [100 * i + t for t in range(8)], max_tokens=2))
    for _ in range(2):
        _step(sched, memory, token=5)
    for i in range(8):
        sched.add(spec(f"w2-{i}", [1000 + 100 * i + t for t in range(8)], max_tokens=2))
    plan = sched.schedule()
    _assert_consecutive(sched, plan)
    memory.apply(plan)
    _check(sched, memory)
    return sched, plan


def test_a_second_wave_runs_beside_the_first_waves_entries_without_a_gap() -> None:
    """The benchmark's second repetition (16 sequences, 4 entries): the entries of the
    first wave sit at ids 4-7; the second wave must not take the freed 0-3 and jump over
    them to 8-11 (two passes per step) but run at 8-15, and nothing needs to move."""
    sched, plan = _two_waves(max_num_seqs=16)
    assert sorted(sched.running_seq_ids().values()) == list(range(8, 16))
    assert not [op for op in plan.memory if isinstance(op, MoveSequence | CopyPrefix)]
    assert sched.prefix_cache_stats() == PrefixCacheStats(
        queries=16, entries=4, max_entries=4, evictions=4, queried_tokens=128
    )


def test_entries_move_out_of_the_run_when_every_id_is_needed() -> None:
    sched, plan = _two_waves(max_num_seqs=8)  # 12 ids: 8 running, 4 entries, none free
    moves = [op for op in plan.memory if isinstance(op, MoveSequence)]
    assert len(moves) == 4
    stats = sched.prefix_cache_stats()
    assert stats is not None
    assert (stats.entries, stats.evictions) == (4, 4)  # none lost


def test_a_sequence_that_leaves_mid_run_is_replaced_by_the_last_one() -> None:
    sched = BatchScheduler(max_num_seqs=3, max_batch_tokens=16, max_model_len=64)
    for rid, max_tokens in zip("abc", (5, 1, 5), strict=True):
        sched.add(spec(rid, [1, 2], max_tokens=max_tokens))
    sched.update_from_output(sampler(sched.schedule()))  # b (id 1) finishes
    plan = sched.schedule()
    assert plan.memory == (KeepPrefix(1, 0), MoveSequence(src=2, dst=1))
    assert sched.running_seq_ids() == {"a": 0, "c": 1}
    assert [t.seq_id for t in plan.tokens] == [0, 1]
    assert plan.tokens[1] == BatchToken(1, 7, 2, True)  # c goes on where it was


def test_a_joining_request_fills_the_gap_and_nothing_moves() -> None:
    sched = BatchScheduler(max_num_seqs=3, max_batch_tokens=16, max_model_len=64)
    for rid, max_tokens in zip("abc", (5, 1, 5), strict=True):
        sched.add(spec(rid, [1, 2], max_tokens=max_tokens))
    sched.update_from_output(sampler(sched.schedule()))
    sched.add(spec("d", [3]))
    plan = sched.schedule()
    assert plan.memory == (KeepPrefix(1, 0),)
    assert sched.running_seq_ids() == {"a": 0, "c": 2, "d": 1}


def test_an_entry_in_the_way_moves_out_and_is_still_reused() -> None:
    sched = _cached(max_num_seqs=2, entries=1)  # ids 0, 1, 2
    memory = _FakeMemory(sched.num_seq_ids)
    sched.add(spec("a", list(range(8)), max_tokens=50))
    sched.add(spec("b", list(range(100, 108)), max_tokens=1))
    _step(sched, memory, token=5)  # b finishes: its entry stays at id 1, beside a
    sched.add(SequenceSpec("c", tuple(range(200, 208)), 1, cacheable=False))
    plan = sched.schedule()
    assert plan.memory == (MoveSequence(src=1, dst=2),)
    assert sched.running_seq_ids() == {"a": 0, "c": 1}
    memory.apply(plan)
    sched.update_from_output(sampler(plan, token=5))
    _check(sched, memory)
    sched.add(spec("d", [*range(100, 108), 5, 6]))  # b's prompt and answer, and more
    plan = sched.schedule()
    _assert_consecutive(sched, plan)
    assert plan.memory == (KeepPrefix(1, 0), CopyPrefix(src=2, dst=1, length=8))
    memory.apply(plan)
    (event,) = [e.event for e in sched.update_from_output(sampler(plan)) if e.request_id == "d"]
    assert event.cached_prompt_tokens == 8


@pytest.mark.parametrize(("max_num_seqs", "entries", "batch"), [(4, 0, 64), (5, 2, 16)])
def test_random_traffic_keeps_the_running_ids_consecutive(
    max_num_seqs: int, entries: int, batch: int
) -> None:
    """Without a cache and with one: joins, leaves and aborts at random; every plan's ids
    are one run and every sequence's KV is exactly its tokens."""
    rng = random.Random(max_num_seqs + entries)
    cache = PrefixCache(max_entries=entries, block_size=BLOCK) if entries else None
    sched = BatchScheduler(
        max_num_seqs=max_num_seqs, max_batch_tokens=batch, max_model_len=256, prefix_cache=cache
    )
    memory = _FakeMemory(sched.num_seq_ids)
    moves = 0
    for i in range(300):
        if rng.random() < 0.4:
            prompt = [rng.randrange(1000) for _ in range(rng.randrange(1, 12))]
            sched.add(spec(f"r{i}", prompt, rng.randrange(1, 9)))
        if rng.random() < 0.05 and sched.running_seq_ids():
            sched.abort(rng.choice(list(sched.running_seq_ids())))
        plan = sched.schedule()
        _assert_consecutive(sched, plan)
        moves += sum(isinstance(op, MoveSequence) for op in plan.memory)
        memory.apply(plan)
        sched.update_from_output(sampler(plan, rng.randrange(1000)))
        for seq in sched._running.values():
            expected = [*seq.spec.prompt_token_ids, *seq.output][: seq.num_computed]
            assert memory.seqs[seq.seq_id] == expected
    assert moves > 0
