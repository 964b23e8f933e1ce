"""The load loops, with a sender that takes a known time and records what it saw."""

import asyncio
import time
from dataclasses import dataclass, field

import pytest

from aiforge.bench.runner import run_bench, run_level
from aiforge.bench.schedule import Load, first_arrivals
from aiforge.bench.source import BenchRequest, ChatSource, RandomSource, source_factory
from aiforge.bench.stats import RequestSample
from aiforge.bench.workload import ChatWorkloadSpec, LengthDistribution, WordTokenizer

EIGHT = LengthDistribution.parse("8")


@dataclass
class TimedSender:
    """Answers every request after ``seconds``; counts requests in flight."""

    seconds: float = 0.02
    in_flight: int = 0
    most_in_flight: int = 0
    seen: list[BenchRequest] = field(default_factory=list)

    async def send(
        self, request: BenchRequest, *, origin: float, scheduled_s: float | None = None
    ) -> tuple[RequestSample, str]:
        started = time.perf_counter()
        self.seen.append(request)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await asyncio.sleep(self.seconds)
        self.in_flight -= 1
        sample = RequestSample(
            index=request.index, start_s=started - origin,
            e2e_s=time.perf_counter() - started, scheduled_s=scheduled_s,
            conversation=request.conversation, turn=request.turn,
        )  # fmt: skip
        return sample, f"answer to {request.index}"


def random_source(limit: int | None) -> RandomSource:
    return RandomSource(WordTokenizer(), EIGHT, EIGHT, limit=limit)


@dataclass
class Recorder:
    events: list[str] = field(default_factory=list)

    def start(self, label: str, *, total: int | None, duration_s: float | None) -> None:
        self.events.append(f"start {label} {total}")

    def advance(self, sample: RequestSample) -> None:
        self.events.append("+")

    def stop(self) -> None:
        self.events.append("stop")


async def test_concurrency_keeps_exactly_n_in_flight() -> None:
    sender = TimedSender()
    done: list[RequestSample] = []
    result = await run_level(sender, random_source(12), Load("concurrency", 3), on_done=done.append)
    assert len(result.samples) == 12
    assert len(done) == 12
    assert sender.most_in_flight == 3
    assert sorted(s.index for s in result.samples) == list(range(12))
    # Four rounds of three, each ~20 ms.
    assert result.wall_s >= 4 * 0.02


async def test_rate_sends_at_the_poisson_arrival_times() -> None:
    sender = TimedSender(seconds=0.01)
    result = await run_level(sender, random_source(15), Load("rate", 50.0), seed=4)
    arrivals = first_arrivals(50.0, seed=4, count=15)
    assert sorted(s.scheduled_s or 0.0 for s in result.samples) == pytest.approx(arrivals)
    lags = [s.start_s - (s.scheduled_s or 0.0) for s in result.samples]
    assert min(lags) >= 0.0
    assert max(lags) < 0.25  # a loaded 2-core machine; the sends are not blocked


async def test_max_concurrency_makes_arrivals_wait_and_the_lag_shows() -> None:
    sender = TimedSender(seconds=0.1)
    load = Load("rate", 100.0, max_concurrency=1)
    result = await run_level(sender, random_source(4), load, seed=0)
    assert sender.most_in_flight == 1
    lags = [s.start_s - (s.scheduled_s or 0.0) for s in result.samples]
    assert max(lags) >= 0.15  # the fourth arrival (~40 ms) waited for three 100 ms requests


async def test_a_duration_stops_new_sends_and_waits_for_those_in_flight() -> None:
    sender = TimedSender(seconds=0.05)
    result = await run_level(sender, random_source(None), Load("concurrency", 2), duration_s=0.3)
    assert 4 <= len(result.samples) <= 14
    assert max(s.start_s for s in result.samples) < 0.3 + 0.05
    assert sender.in_flight == 0
    rate = await run_level(TimedSender(), random_source(None), Load("rate", 40.0), duration_s=0.3)
    assert all((s.scheduled_s or 0.0) < 0.3 for s in rate.samples)
    assert 2 <= len(rate.samples) <= 40


async def test_chat_turns_carry_the_answers_the_sender_gave() -> None:
    spec = ChatWorkloadSpec(conversations=2, turns=3, system_prompts=1, system_tokens=10,
                            user_tokens_min=3, user_tokens_max=3, max_tokens=8)  # fmt: skip
    sender = TimedSender(seconds=0.005)
    source = ChatSource(spec, WordTokenizer(), EIGHT, limit=6)
    result = await run_level(sender, source, Load("concurrency", 4))
    assert len(result.samples) == 6
    assert sender.most_in_flight == 2  # two conversations, one turn of each at a time
    last = [r for r in sender.seen if r.turn == 2]
    assert len(last) == 2
    for request in last:
        assert request.messages is not None
        answers = [m["content"] for m in request.messages if m["role"] == "assistant"]
        assert len(answers) == 2
        assert all(a.startswith("answer to ") for a in answers)


async def test_run_bench_warms_up_then_runs_each_level_with_its_own_prompts() -> None:
    sender = TimedSender(seconds=0.005)
    make = source_factory("random", WordTokenizer(), prompt_tokens=EIGHT, output_tokens=EIGHT)
    recorder = Recorder()
    loads = [Load("concurrency", 1), Load("concurrency", 2)]
    run = await run_bench(sender, make, loads, recorder, requests=3, warmup=2, seed=9)
    assert len(run.warmup) == 2
    assert [len(level.samples) for level in run.levels] == [3, 3]
    assert recorder.events[0] == "start warm-up 2"
    assert "start concurrency 2 3" in recorder.events
    assert recorder.events.count("stop") == 3
    prompts = [r.messages[0]["content"] for r in sender.seen if r.messages]
    assert len(set(prompts)) == len(prompts) == 8  # warm-up and levels never repeat a prompt
    assert len(run.load_average_start) == 3
    with pytest.raises(ValueError, match="bound the run"):
        await run_bench(sender, make, loads, recorder, requests=None)
