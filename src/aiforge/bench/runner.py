"""Drives one load level: takes requests from a source, sends them on the schedule.

``concurrency`` N runs N workers, each sending its next request as soon as its last one
finished. ``rate`` R sends at the Poisson arrival times of :func:`schedule.arrival_offsets`
(waiting for a free slot under ``max_concurrency``, or for a chat turn to become ready;
such a request goes out late, and its lag is recorded). A level ends when the source is
exhausted (``--requests``) or, bounded by time, at ``duration_s``: nothing new is sent
after it and the requests in flight finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from aiforge.bench.schedule import Load, arrival_offsets
from aiforge.bench.source import BenchRequest, RequestSource
from aiforge.bench.stats import RequestSample

__all__ = [
    "LevelResult",
    "Progress",
    "RunResult",
    "Sender",
    "SourceFactory",
    "run_bench",
    "run_level",
]


class Sender(Protocol):
    """What sends a request and times it (:class:`aiforge.bench.client.BenchClient`)."""

    async def send(
        self, request: BenchRequest, *, origin: float, scheduled_s: float | None = None
    ) -> tuple[RequestSample, str]: ...


@dataclass
class LevelResult:
    load: Load
    samples: list[RequestSample]
    wall_s: float
    """From the level's start to its last request's end (including any start delay)."""


@dataclass
class _Level:
    sender: Sender
    source: RequestSource
    load: Load
    deadline: float | None
    on_done: Callable[[RequestSample], None]
    origin: float = field(default_factory=time.perf_counter)
    samples: list[RequestSample] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def open(self) -> bool:
        """True while new requests may still go out."""
        past = self.deadline is not None and time.perf_counter() >= self.deadline
        return not past and not self.source.exhausted

    async def next_request(self) -> BenchRequest | None:
        """The next ready request, waiting for one to become ready; None once closed."""
        async with self.changed:
            while self.open():
                request = self.source.next_ready()
                if request is not None:
                    return request
                await self._wait_for_change()
        return None

    async def _wait_for_change(self) -> None:
        timeout = None if self.deadline is None else max(0.0, self.deadline - time.perf_counter())
        with contextlib.suppress(TimeoutError):  # the deadline passed: the caller re-checks
            await asyncio.wait_for(self.changed.wait(), timeout)

    async def send(self, request: BenchRequest, scheduled_s: float | None = None) -> None:
        sample, answer = await self.sender.send(
            request, origin=self.origin, scheduled_s=scheduled_s
        )
        self.samples.append(sample)
        async with self.changed:
            self.source.complete(request, answer)
            self.changed.notify_all()
        self.on_done(sample)


async def _closed_loop(level: _Level, slots: int) -> None:
    async def worker() -> None:
        while (request := await level.next_request()) is not None:
            await level.send(request)

    await asyncio.gather(*(worker() for _ in range(slots)))


async def _open_loop(level: _Level, seed: int) -> None:
    gate = asyncio.Semaphore(level.load.slots) if level.load.slots else None
    in_flight: set[asyncio.Task[None]] = set()

    async def send(request: BenchRequest, scheduled_s: float) -> None:
        try:
            await level.send(request, scheduled_s)
        finally:
            if gate is not None:
                gate.release()

    for offset in arrival_offsets(level.load.value, seed):
        delay = level.origin + offset - time.perf_counter()
        if level.deadline is not None and level.origin + offset >= level.deadline:
            break
        if delay > 0:
            await asyncio.sleep(delay)
        if gate is not None:
            await gate.acquire()
        request = await level.next_request()
        if request is None:
            if gate is not None:
                gate.release()
            break
        task = asyncio.create_task(send(request, offset))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    await asyncio.gather(*in_flight)


async def run_level(
    sender: Sender,
    source: RequestSource,
    load: Load,
    *,
    seed: int = 0,
    duration_s: float | None = None,
    on_done: Callable[[RequestSample], None] = lambda sample: None,
) -> LevelResult:
    """Run ``load`` with requests from ``source`` until it is exhausted or ``duration_s``
    has passed; every request sent is waited for and sampled."""
    origin = time.perf_counter()
    deadline = None if duration_s is None else origin + duration_s
    level = _Level(sender, source, load, deadline, on_done, origin=origin)
    if load.kind == "concurrency":
        await _closed_loop(level, int(load.value))
    else:
        await _open_loop(level, seed)
    return LevelResult(load, level.samples, time.perf_counter() - origin)


# -- a whole run: warm-up, then each load level ----------------------------------------------


WARMUP_SEED_OFFSET = 1_000_000
"""Warm-up requests use the seed plus this: prompts no measured request shares."""


class Progress(Protocol):
    """Told what the run does, for a progress bar (``report.RichProgress``)."""

    def start(self, label: str, *, total: int | None, duration_s: float | None) -> None: ...

    def advance(self, sample: RequestSample) -> None: ...

    def stop(self) -> None: ...


class SourceFactory(Protocol):
    def __call__(self, *, seed: int, limit: int | None) -> RequestSource: ...


@dataclass
class RunResult:
    """A whole run: the warm-up's samples, then each level's."""

    warmup: list[RequestSample]
    levels: list[LevelResult]
    load_average_start: tuple[float, float, float]
    load_average_end: tuple[float, float, float]
    started_at: float
    """Unix time of the start."""
    wall_s: float


def _load_average() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:  # not every platform has one
        return (float("nan"),) * 3


async def run_bench(
    sender: Sender,
    make_source: SourceFactory,
    loads: list[Load],
    progress: Progress,
    *,
    requests: int | None,
    duration_s: float | None = None,
    warmup: int = 0,
    seed: int = 0,
) -> RunResult:
    """Warm up with ``warmup`` requests (at the first level's slots, at most
    ``warmup``), then run each of ``loads`` in turn, each with its own requests (seed
    plus the level's index: a sweep does not meet its own prompts in a prefix cache)."""
    if requests is None and duration_s is None:
        raise ValueError("bound the run by a number of requests or a duration")
    started_at, started = time.time(), time.perf_counter()
    load_start = _load_average()
    warm: list[RequestSample] = []
    if warmup > 0:
        slots = min(warmup, loads[0].slots or max(1, round(loads[0].value)))
        progress.start("warm-up", total=warmup, duration_s=None)
        source = make_source(seed=seed + WARMUP_SEED_OFFSET, limit=warmup)
        result = await run_level(
            sender, source, Load("concurrency", slots), on_done=progress.advance
        )
        progress.stop()
        warm = result.samples
    levels = []
    for index, load in enumerate(loads):
        progress.start(load.label, total=requests, duration_s=duration_s)
        source = make_source(seed=seed + index, limit=requests)
        level = await run_level(
            sender, source, load, seed=seed + index, duration_s=duration_s,
            on_done=progress.advance,
        )  # fmt: skip
        levels.append(level)
        progress.stop()
    return RunResult(
        warm, levels, load_start, _load_average(), started_at, time.perf_counter() - started
    )
