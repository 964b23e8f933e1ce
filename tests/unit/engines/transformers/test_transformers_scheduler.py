"""The continuous-batching scheduler as a pure state machine (no torch, no threads)."""

from __future__ import annotations

import random

import pytest

from aiforge.engines.prefix_cache import PrefixCache
from aiforge.engines.transformers.scheduler import (
    Scheduler,
    SchedulerOutput,
    SequenceStatus,
    SlotMove,
    StepEvent,
    StopCriteria,
)

EOS = 99


def _stop(max_tokens: int = 10, max_model_len: int = 100) -> StopCriteria:
    return StopCriteria(max_tokens, max_model_len, frozenset({EOS}))


def _run_step(sched: Scheduler, token: int = 1) -> tuple[SchedulerOutput, list[StepEvent]]:
    out = sched.schedule()
    sampled = {c.request_id: token for c in out.prefills if c.is_last}
    sampled.update({d.request_id: token for d in out.decodes})
    return out, sched.update_from_output(out, sampled)


def test_admits_up_to_max_num_seqs_and_queues_the_rest() -> None:
    sched = Scheduler(max_num_seqs=2)
    for i in range(3):
        sched.add(f"r{i}", [1, 2, 3], _stop())
    out, events = _run_step(sched)
    assert [c.request_id for c in out.prefills] == ["r0", "r1"]
    assert [c.slot for c in out.prefills] == [0, 1]
    assert all(c.is_last and c.start == 0 for c in out.prefills)
    assert [e.request_id for e in events] == ["r0", "r1"]
    assert (sched.num_running, sched.num_waiting) == (2, 1)
    out, _ = _run_step(sched)
    assert out.prefills == ()
    assert [(d.request_id, d.slot, d.position, d.token_id) for d in out.decodes] == [
        ("r0", 0, 3, 1),
        ("r1", 1, 3, 1),
    ]


def test_prefill_is_chunked_by_the_token_budget() -> None:
    sched = Scheduler(max_num_seqs=4, max_prefill_tokens=4)
    sched.add("long", list(range(10)), _stop())
    sched.add("short", [5, 6], _stop())
    out, events = _run_step(sched)
    assert [(c.request_id, c.start, c.token_ids, c.is_last) for c in out.prefills] == [
        ("long", 0, (0, 1, 2, 3), False)
    ]
    assert events == []
    out, _ = _run_step(sched)
    assert [(c.request_id, c.start, len(c.token_ids)) for c in out.prefills] == [("long", 4, 4)]
    out, events = _run_step(sched)
    assert [(c.request_id, c.start, c.is_last) for c in out.prefills] == [
        ("long", 8, True),
        ("short", 0, True),
    ]
    assert {e.request_id for e in events} == {"long", "short"}


def test_stops_on_stop_token_max_tokens_and_model_length() -> None:
    sched = Scheduler(max_num_seqs=4)
    sched.add("eos", [1], _stop())
    sched.add("len", [1], _stop(max_tokens=2))
    sched.add("ctx", [1, 2, 3], _stop(max_model_len=5))
    out = sched.schedule()
    events = sched.update_from_output(out, {"eos": EOS, "len": 7, "ctx": 7})
    assert {e.request_id: e.finish_reason for e in events} == {
        "eos": "stop",
        "len": None,
        "ctx": None,
    }
    out = sched.schedule()
    events = sched.update_from_output(out, {"len": 7, "ctx": 7})
    assert {e.request_id: e.finish_reason for e in events} == {"len": "length", "ctx": "length"}
    assert not sched.has_unfinished()


def test_constraint_finish_ends_with_stop() -> None:
    sched = Scheduler(max_num_seqs=1)
    sched.add("g", [1], _stop())
    out = sched.schedule()
    events = sched.update_from_output(out, {"g": 5}, frozenset({"g"}))
    assert events == [StepEvent("g", 5, "stop")]


def test_leaving_from_the_middle_compacts_slots_and_admits_at_the_end() -> None:
    sched = Scheduler(max_num_seqs=3)
    for i in range(4):
        sched.add(f"r{i}", [1, 2], _stop())
    _run_step(sched)
    assert sched.abort("r0")
    out = sched.schedule()
    assert out.moves == (SlotMove(src=2, dst=0, length=2),)
    assert out.freed == ("r0",)
    assert [(d.request_id, d.slot) for d in out.decodes] == [("r2", 0), ("r1", 1)]
    assert [(c.request_id, c.slot) for c in out.prefills] == [("r3", 2)]
    state = sched.get("r2")
    assert state is not None
    assert state.slot == 0


def test_abort_of_waiting_and_unknown_requests() -> None:
    sched = Scheduler(max_num_seqs=1)
    sched.add("a", [1], _stop())
    sched.add("b", [1], _stop())
    assert sched.abort("b")
    assert not sched.abort("b")
    assert not sched.abort("nope")
    out, _ = _run_step(sched)
    assert [c.request_id for c in out.prefills] == ["a"]
    assert out.freed == ("b",)


def test_abort_between_schedule_and_update_drops_the_token() -> None:
    sched = Scheduler(max_num_seqs=2)
    sched.add("a", [1], _stop())
    out = sched.schedule()
    sched.abort("a")
    assert sched.update_from_output(out, {"a": 3}) == []
    state = sched.get("a")
    assert state is None


def test_rejects_invalid_requests() -> None:
    sched = Scheduler(max_num_seqs=1)
    with pytest.raises(ValueError, match="prompt"):
        sched.add("empty", [], _stop())
    with pytest.raises(ValueError, match="prompt"):
        sched.add("long", [1] * 100, _stop(max_model_len=100))
    with pytest.raises(ValueError, match="max_tokens"):
        sched.add("zero", [1], _stop(max_tokens=0))
    sched.add("a", [1], _stop())
    with pytest.raises(ValueError, match="duplicate"):
        sched.add("a", [1], _stop())
    with pytest.raises(ValueError, match="at least 1"):
        Scheduler(max_num_seqs=0)


def test_abort_all_clears_everything() -> None:
    sched = Scheduler(max_num_seqs=1)
    sched.add("a", [1], _stop())
    sched.add("b", [1], _stop())
    _run_step(sched)
    assert sorted(sched.abort_all()) == ["a", "b"]
    assert not sched.has_unfinished()
    running = sched.get("a")
    assert running is None or running.status is SequenceStatus.FINISHED


# -- prefix caching -------------------------------------------------------------------

BLOCK = 4


class _FakeRows:
    """The KV cache as the scheduler sees it: which token's KV is at each row position."""

    def __init__(self, num_slots: int) -> None:
        self.rows: list[list[int | None]] = [[] for _ in range(num_slots)]

    def apply(self, out: SchedulerOutput) -> None:
        for move in out.moves:
            assert move.src != move.dst
            self._put(move.dst, 0, self.rows[move.src][: move.length])
        for chunk in out.prefills:
            assert len(self.rows[chunk.slot]) >= chunk.start, "a gap before the chunk"
            self._put(chunk.slot, chunk.start, list(chunk.token_ids))
        for item in out.decodes:
            self._put(item.slot, item.position, [item.token_id])

    def _put(self, row: int, start: int, values: list[int | None]) -> None:
        target = self.rows[row]
        assert len(values) == 0 or len(target) >= start
        target[start : start + len(values)] = values


def _cached_scheduler(max_num_seqs: int, entries: int, budget: int = 512) -> Scheduler:
    cache = PrefixCache(max_entries=entries, block_size=BLOCK)
    return Scheduler(max_num_seqs=max_num_seqs, max_prefill_tokens=budget, prefix_cache=cache)


def _check_rows(sched: Scheduler, rows: _FakeRows) -> None:
    """Every running sequence's row and every resident entry's row hold their tokens."""
    running = {seq.slot for seq in sched._by_slot.values()}
    for seq in sched._by_slot.values():
        assert seq.slot is not None
        expected = seq.computed_token_ids()
        assert rows.rows[seq.slot][: len(expected)] == expected
    cache = sched._cache
    assert cache is not None
    assert len(cache) <= cache.max_entries
    for loc in cache.locations():
        assert loc not in running
        entry = cache._entries[loc].tokens
        assert tuple(rows.rows[loc][: len(entry)]) == entry


def _step(sched: Scheduler, rows: _FakeRows, token: int) -> list[StepEvent]:
    out = sched.schedule()
    running = {seq.slot for seq in sched._by_slot.values()}
    assert running == set(range(sched.num_running)), "running rows are dense"
    rows.apply(out)
    sampled = {c.request_id: token for c in out.prefills if c.is_last}
    sampled.update({d.request_id: token for d in out.decodes})
    events = sched.update_from_output(out, sampled)
    _check_rows(sched, rows)
    return events


def test_a_second_turn_adopts_the_first_turn_row_in_place() -> None:
    sched = _cached_scheduler(max_num_seqs=2, entries=2)
    rows = _FakeRows(sched.num_slots)
    turn1 = list(range(10))
    sched.add("t1", turn1, _stop(max_tokens=3))
    for _ in range(3):
        _step(sched, rows, token=50)
    assert sched.num_running == 0
    # Turn 2: turn 1's prompt, its answer (2 of 3 answer tokens have KV), a new message.
    turn2 = [*turn1, 50, 50, 50, 7, 8]
    sched.add("t2", turn2, _stop(max_tokens=2))
    out = sched.schedule()
    assert out.moves == ()  # same row: adopted, nothing copied
    assert [(c.slot, c.start, c.token_ids) for c in out.prefills] == [(0, 12, (50, 7, 8))]
    rows.apply(out)
    events = sched.update_from_output(out, {"t2": 1})
    assert events[0].cached_tokens == 12
    _check_rows(sched, rows)


def test_a_prefix_held_in_another_row_is_copied_and_the_entry_kept() -> None:
    sched = _cached_scheduler(max_num_seqs=2, entries=2)
    rows = _FakeRows(sched.num_slots)
    system = list(range(8))
    sched.add("a", [*system, 1, 1], _stop(max_tokens=1))
    sched.add("b", [*system, 2, 2], _stop(max_tokens=20))
    _step(sched, rows, token=5)  # a finishes at row 0; b runs on (moved to row 0 next)
    out = sched.schedule()
    # a's entry leaves row 0 for a free row before b takes row 0.
    assert out.moves == (SlotMove(0, 3, 10), SlotMove(1, 0, 10))
    rows.apply(out)
    sched.update_from_output(out, {"b": 5})
    _check_rows(sched, rows)
    sched.add("c", [*system, 3, 3, 3], _stop(max_tokens=1))
    out = sched.schedule()
    # b is running in row 0, c joins at row 1 with the system prompt copied from a's row 3.
    assert out.moves == (SlotMove(3, 1, 8),)
    assert [(c.request_id, c.slot, c.start) for c in out.prefills] == [("c", 1, 8)]
    rows.apply(out)
    events = sched.update_from_output(out, {"b": 5, "c": 5})
    assert {e.request_id: e.cached_tokens for e in events} == {"b": 0, "c": 8}
    _check_rows(sched, rows)


def test_images_neither_reuse_nor_leave_kv() -> None:
    sched = _cached_scheduler(max_num_seqs=1, entries=1)
    rows = _FakeRows(sched.num_slots)
    prompt = list(range(12))
    sched.add("img", prompt, _stop(max_tokens=1), cacheable=False)
    _step(sched, rows, token=5)
    sched.add("text", prompt, _stop(max_tokens=1))
    out = sched.schedule()
    assert out.prefills[0].start == 0
    stats = sched.prefix_cache_stats()
    assert stats is not None
    assert (stats.queries, stats.hits, stats.entries) == (1, 0, 0)


def test_clearing_forgets_every_entry() -> None:
    sched = _cached_scheduler(max_num_seqs=1, entries=1)
    rows = _FakeRows(sched.num_slots)
    sched.add("a", list(range(12)), _stop(max_tokens=1))
    _step(sched, rows, token=5)
    sched.clear_prefix_cache()
    sched.add("b", list(range(12)), _stop(max_tokens=1))
    assert sched.schedule().prefills[0].start == 0
    assert Scheduler(max_num_seqs=1).prefix_cache_stats() is None


@pytest.mark.parametrize(("max_num_seqs", "entries", "budget"), [(1, 1, 512), (3, 1, 6), (3, 4, 9)])
def test_random_traffic_keeps_every_row_exact(max_num_seqs: int, entries: int, budget: int) -> None:
    """Sequences sharing prefixes join, finish and abort at random; after every step each
    running row and each resident entry holds exactly its tokens, and reuse happens."""
    rng = random.Random(max_num_seqs * 100 + entries)
    sched = _cached_scheduler(max_num_seqs, entries, budget)
    rows = _FakeRows(sched.num_slots)
    prefixes = [[rng.randrange(1000) for _ in range(rng.randrange(4, 20))] for _ in range(3)]
    cached = 0
    for i in range(120):
        if rng.random() < 0.4:
            prompt = [
                *rng.choice(prefixes),
                *(rng.randrange(1000) for _ in range(rng.randrange(1, 6))),
            ]
            sched.add(f"r{i}", prompt, _stop(max_tokens=rng.randrange(1, 6)))
        if rng.random() < 0.05 and sched.num_running:
            victim = rng.choice(list(sched._by_slot.values()))
            sched.abort(victim.request_id)
        events = _step(sched, rows, token=rng.randrange(1000))
        cached += sum(e.cached_tokens for e in events)
    assert cached > 0


def test_a_partial_match_in_the_joining_row_is_used_in_place_and_the_entry_moves_on() -> None:
    sched = _cached_scheduler(max_num_seqs=2, entries=2)
    rows = _FakeRows(sched.num_slots)
    system = list(range(8))
    sched.add("warm", [*system, 1, 1], _stop(max_tokens=1))
    _step(sched, rows, token=5)
    sched.add("b", [*system, 2, 2], _stop(max_tokens=1))
    out = sched.schedule()
    assert out.moves == (SlotMove(0, 3, 10),)  # the entry is copied away, b keeps row 0
    assert [(c.slot, c.start) for c in out.prefills] == [(0, 8)]
    rows.apply(out)
    sched.update_from_output(out, {"b": 5})
    _check_rows(sched, rows)
