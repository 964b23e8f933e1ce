"""The batch runner's decisions, pure: what an attempt's answer means for its line, when a
line may start, which line starts next. No I/O, no clock (``now`` is passed in).

Request ids. Each line's request id is derived from the batch id and the line's index, so
a line re-run after a crash is metered under the id its interrupted run had: the ledger
keeps one record per request id, and the re-run's real record replaces the placeholder the
crash left (``gateway_crashed``). An attempt the gateway *refused* (429, or 503 while it
shuts down) already has a real record of its own; the line's next attempt takes the next
id (``…-r1``, ``…-r2``), counted in the stored ``attempts``, so it is metered too.

Priority. Batch lines yield to interactive traffic: a line starts on a deployment only
while fewer interactive requests are in flight there than it has ready replicas
(:func:`may_start`); lines already running finish. Across batches the lines start in
turn, one batch after another, so a small batch is not stuck behind a big one.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

Outcome = Literal["succeeded", "failed"]
Action = Literal["store", "retry", "halt"]

MAX_TRANSIENT_FAILURES = 5
"""Tries of a line whose replica failed (502/503/504) before its error is its result."""
MAX_BACKOFF_S = 60.0
_TRANSIENT_STATUSES = frozenset({502, 503, 504})
_RATE_LIMITED = "rate_limit_exceeded"
_SHUTTING_DOWN = "shutting_down"


def line_request_id(batch_id: str, index: int, attempt: int = 0) -> str:
    """The request id (and usage record id) of attempt ``attempt`` of a line."""
    base = f"{batch_id}-{index}"
    return base if attempt == 0 else f"{base}-r{attempt}"


def backoff_s(failures: int) -> float:
    """Seconds before the next try after ``failures`` refusals or failures in a row."""
    return float(min(MAX_BACKOFF_S, 2.0 ** max(0, failures - 1)))


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do with a line after one attempt."""

    action: Action
    """``store`` the answer as the line's result; ``retry`` it after ``delay_s`` under its
    next request id; ``halt``: leave it without a result (the gateway is stopping; the
    next start runs it)."""
    outcome: Outcome | None = None
    delay_s: float = 0.0


def judge(
    status: int, code: str | None, *, failures: int, retry_after_s: float | None = None
) -> Verdict:
    """The verdict on an attempt answered ``status`` (``code``: the error's code, for the
    gateway's own refusals). ``failures``: refusals and failures of the line so far,
    this one included."""
    if status == 200:
        return Verdict("store", "succeeded")
    if status == 429 and code == _RATE_LIMITED:
        return Verdict("retry", delay_s=max(retry_after_s or 0.0, backoff_s(failures)))
    if status == 503 and code == _SHUTTING_DOWN:
        return Verdict("halt")
    if status in _TRANSIENT_STATUSES and failures < MAX_TRANSIENT_FAILURES:
        return Verdict("retry", delay_s=backoff_s(failures))
    return Verdict("store", "failed")


def may_start(*, ready_replicas: int, in_flight: int, batch_in_flight: int) -> bool:
    """Whether a batch line may start on a deployment with ``ready_replicas`` replicas and
    ``in_flight`` requests in flight, ``batch_in_flight`` of them batch lines."""
    interactive = max(0, in_flight - batch_in_flight)
    return ready_replicas > 0 and interactive < ready_replicas


@dataclass(slots=True)
class LineWork:
    """One line to run: where it is, its request and its attempts so far."""

    batch_id: str
    index: int
    custom_id: str
    body: bytes
    attempt: int = 0
    """Metered attempts that were refused (the next request id's suffix)."""
    failures: int = 0
    """Refusals and failures in this process (for the backoff)."""

    @property
    def request_id(self) -> str:
        return line_request_id(self.batch_id, self.index, self.attempt)


@dataclass
class _BatchLines:
    model: str
    queued: deque[LineWork] = field(default_factory=deque)
    waiting: list[tuple[float, int, LineWork]] = field(default_factory=list)
    """Lines to retry, a heap by the time they may start again."""
    running: int = 0


class LineSchedule:
    """Which lines start next, at most ``capacity`` running at once (all batches)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._batches: dict[str, _BatchLines] = {}
        self._turn: deque[str] = deque()
        self._ticket = 0

    @property
    def running(self) -> int:
        return sum(b.running for b in self._batches.values())

    def track(self, batch_id: str, model: str) -> None:
        """Schedule lines of ``batch_id``, all for ``model`` (known once it is validated)."""
        lines = self._batches.get(batch_id)
        if lines is None:
            self._batches[batch_id] = _BatchLines(model)
            self._turn.append(batch_id)
        else:
            lines.model = model

    def add(self, work: LineWork) -> None:
        self._batches[work.batch_id].queued.append(work)

    def retry(self, work: LineWork, at: float) -> None:
        """``work`` ended without a result; it may start again at ``at``."""
        lines = self._batches[work.batch_id]
        lines.running -= 1
        self._ticket += 1
        heapq.heappush(lines.waiting, (at, self._ticket, work))

    def done(self, work: LineWork) -> None:
        """``work`` is no longer running (its result is stored, or it was halted)."""
        self._batches[work.batch_id].running -= 1

    def queued(self, batch_id: str) -> int:
        lines = self._batches.get(batch_id)
        return len(lines.queued) + len(lines.waiting) if lines else 0

    def running_of(self, batch_id: str) -> int:
        lines = self._batches.get(batch_id)
        return lines.running if lines else 0

    def running_on(self, model: str) -> int:
        return sum(b.running for b in self._batches.values() if b.model == model)

    def drop(self, batch_id: str) -> int:
        """Forget the lines of ``batch_id`` that have not started; how many there were."""
        lines = self._batches.get(batch_id)
        if lines is None:
            return 0
        dropped = len(lines.queued) + len(lines.waiting)
        lines.queued.clear()
        lines.waiting.clear()
        return dropped

    def forget(self, batch_id: str) -> None:
        """The batch is finished here: drop its bookkeeping (nothing of it runs)."""
        self._batches.pop(batch_id, None)
        if batch_id in self._turn:
            self._turn.remove(batch_id)

    def next_lines(self, now: float, may_start_on: Callable[[str], bool]) -> list[LineWork]:
        """The lines to start now: one per batch in turn while there is room, from each
        batch's retries that are due, then its queue; a batch whose model may not take a
        line now (``may_start_on(model)`` false) waits for the next call."""
        started: list[LineWork] = []
        blocked: set[str] = set()
        while self.running < self.capacity:
            progressed = False
            for _ in range(len(self._turn)):
                if self.running >= self.capacity:
                    break
                batch_id = self._turn[0]
                self._turn.rotate(-1)
                lines = self._batches[batch_id]
                if lines.model in blocked:
                    continue
                work = self._take(lines, now)
                if work is None:
                    continue
                if not may_start_on(lines.model):
                    blocked.add(lines.model)
                    self._put_back(lines, work)
                    continue
                lines.running += 1
                started.append(work)
                progressed = True
            if not progressed:
                break
        return started

    @staticmethod
    def _take(lines: _BatchLines, now: float) -> LineWork | None:
        if lines.waiting and lines.waiting[0][0] <= now:
            return heapq.heappop(lines.waiting)[2]
        return lines.queued.popleft() if lines.queued else None

    def _put_back(self, lines: _BatchLines, work: LineWork) -> None:
        lines.queued.appendleft(work)
