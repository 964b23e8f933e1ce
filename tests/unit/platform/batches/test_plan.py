"""The batch runner's pure decisions: verdicts on attempts, request ids, priority, and the
order in which lines start."""

from __future__ import annotations

import pytest

from aiforge.platform.batches.plan import (
    MAX_TRANSIENT_FAILURES,
    LineSchedule,
    LineWork,
    Verdict,
    backoff_s,
    judge,
    line_request_id,
    may_start,
)


def test_a_line_keeps_its_request_id_across_crashes_and_moves_on_after_a_refusal() -> None:
    assert line_request_id("batch_a", 7) == "batch_a-7"
    assert line_request_id("batch_a", 7, 0) == line_request_id("batch_a", 7)
    assert line_request_id("batch_a", 7, 2) == "batch_a-7-r2"
    work = LineWork("batch_a", 7, "c", b"{}")
    work.attempt += 1
    assert work.request_id == "batch_a-7-r1"


@pytest.mark.parametrize(
    ("status", "code", "failures", "verdict"),
    [
        (200, None, 0, Verdict("store", "succeeded")),
        (400, "invalid_value", 1, Verdict("store", "failed")),
        (404, "model_not_found", 1, Verdict("store", "failed")),
        (500, None, 1, Verdict("store", "failed")),
        (503, "shutting_down", 1, Verdict("halt")),
        (502, "upstream_error", 1, Verdict("retry", delay_s=1.0)),
        (503, "engine_unavailable", 3, Verdict("retry", delay_s=4.0)),
        (502, "upstream_error", MAX_TRANSIENT_FAILURES, Verdict("store", "failed")),
    ],
)
def test_verdicts(status: int, code: str | None, failures: int, verdict: Verdict) -> None:
    assert judge(status, code, failures=failures) == verdict


def test_rate_limited_lines_wait_at_least_retry_after_and_are_never_failed() -> None:
    assert judge(429, "rate_limit_exceeded", failures=1, retry_after_s=7) == Verdict(
        "retry", delay_s=7.0
    )
    many = judge(429, "rate_limit_exceeded", failures=100, retry_after_s=1)
    assert (many.action, many.delay_s) == ("retry", 60.0)
    assert [backoff_s(n) for n in range(1, 5)] == [1.0, 2.0, 4.0, 8.0]


def test_batch_lines_yield_to_interactive_traffic() -> None:
    assert may_start(ready_replicas=1, in_flight=0, batch_in_flight=0)
    assert may_start(ready_replicas=1, in_flight=3, batch_in_flight=3)
    assert not may_start(ready_replicas=1, in_flight=4, batch_in_flight=3)
    assert may_start(ready_replicas=2, in_flight=1, batch_in_flight=0)
    assert not may_start(ready_replicas=2, in_flight=2, batch_in_flight=0)
    assert not may_start(ready_replicas=0, in_flight=0, batch_in_flight=0)


def _works(batch: str, count: int) -> list[LineWork]:
    return [LineWork(batch, i, f"{batch}-{i}", b"{}") for i in range(count)]


def _ids(works: list[LineWork]) -> list[str]:
    return [w.custom_id for w in works]


def test_lines_start_in_turn_across_batches_within_the_capacity() -> None:
    schedule = LineSchedule(capacity=3)
    for batch in ("a", "b"):
        schedule.track(batch, "m")
        for work in _works(batch, 3):
            schedule.add(work)
    first = schedule.next_lines(0.0, lambda model: True)
    assert _ids(first) == ["a-0", "b-0", "a-1"]
    assert schedule.next_lines(0.0, lambda model: True) == []
    schedule.done(first[0])
    assert _ids(schedule.next_lines(0.0, lambda model: True)) == ["b-1"]
    assert (schedule.running, schedule.queued("a"), schedule.queued("b")) == (3, 1, 1)


def test_a_busy_deployment_holds_its_lines_but_not_others() -> None:
    schedule = LineSchedule(capacity=4)
    schedule.track("a", "busy")
    schedule.track("b", "idle")
    for work in _works("a", 2) + _works("b", 2):
        schedule.add(work)
    started = schedule.next_lines(0.0, lambda model: model == "idle")
    assert _ids(started) == ["b-0", "b-1"]
    assert schedule.queued("a") == 2
    assert _ids(schedule.next_lines(0.0, lambda model: True)) == ["a-0", "a-1"]


def test_a_retried_line_waits_for_its_time() -> None:
    schedule = LineSchedule(capacity=1)
    schedule.track("a", "m")
    for work in _works("a", 2):
        schedule.add(work)
    (first,) = schedule.next_lines(0.0, lambda model: True)
    schedule.retry(first, at=10.0)
    (second,) = schedule.next_lines(1.0, lambda model: True)
    assert second.custom_id == "a-1"
    schedule.done(second)
    assert schedule.next_lines(9.0, lambda model: True) == []
    assert _ids(schedule.next_lines(10.0, lambda model: True)) == ["a-0"]


def test_a_cancelled_batch_drops_the_lines_not_started() -> None:
    schedule = LineSchedule(capacity=1)
    schedule.track("a", "m")
    for work in _works("a", 5):
        schedule.add(work)
    (running,) = schedule.next_lines(0.0, lambda model: True)
    assert schedule.drop("a") == 4
    assert schedule.running_of("a") == 1
    schedule.done(running)
    assert schedule.next_lines(0.0, lambda model: True) == []
    schedule.forget("a")
    assert schedule.running == 0
