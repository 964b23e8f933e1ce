"""The continuous-batching scheduler as a pure state machine (no torch, no threads)."""

from __future__ import annotations

import pytest

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
