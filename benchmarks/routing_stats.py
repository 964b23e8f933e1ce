"""Statistics and the report of ``benchmarks/routing.py``: pure, no I/O.

Per routing policy the benchmark collects one :class:`RequestSample` per request and the
replicas' prefix-cache counters before and after the measured phase; :func:`summarize`
turns them into a :class:`PolicySummary`, and :func:`render_table` into a Markdown table.
Percentiles are ``aiforge bench``'s (:func:`aiforge.bench.stats.percentile`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from aiforge.bench.stats import percentile

__all__ = [
    "CacheCounters",
    "PolicySummary",
    "RequestSample",
    "cache_counters",
    "percentile",
    "render_table",
    "summarize",
    "ttft_ratio",
]


@dataclass(frozen=True, slots=True)
class RequestSample:
    """One request of the workload as the client saw it."""

    conversation: int
    turn: int
    ttft_s: float | None
    """Seconds from sending to the first chunk carrying generated text; None on error."""
    latency_s: float | None
    """Seconds from sending to the end of the stream; None on error."""
    completion_tokens: int = 0
    prompt_tokens: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class CacheCounters:
    """A replica's cumulative prefix-cache counters (vLLM's ``/metrics``), in tokens."""

    queries: float = 0.0
    hits: float = 0.0
    requests: float = 0.0

    def __add__(self, other: CacheCounters) -> CacheCounters:
        return CacheCounters(
            self.queries + other.queries, self.hits + other.hits, self.requests + other.requests
        )

    def __sub__(self, other: CacheCounters) -> CacheCounters:
        return CacheCounters(
            self.queries - other.queries, self.hits - other.hits, self.requests - other.requests
        )


_COUNTERS = {
    "vllm:prefix_cache_queries_total": "queries",
    "vllm:prefix_cache_hits_total": "hits",
    "vllm:request_success_total": "requests",
}


def cache_counters(metrics_text: str) -> CacheCounters:
    """:class:`CacheCounters` from a Prometheus text exposition (labels summed over)."""
    sums = dict.fromkeys(_COUNTERS.values(), 0.0)
    for line in metrics_text.splitlines():
        if not line or line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        key = _COUNTERS.get(name)
        if key is not None:
            sums[key] += float(line.rsplit(" ", 1)[-1])
    return CacheCounters(**sums)


@dataclass(frozen=True, slots=True)
class PolicySummary:
    """One routing policy's results over the whole workload (every round)."""

    policy: str
    requests: int
    errors: int
    wall_s: float
    ttft_p50_s: float
    ttft_p90_s: float
    ttft_p99_s: float
    latency_p50_s: float
    output_tok_s: float
    requests_per_s: float
    prompt_tokens: int
    cache_hit_rate: float | None = None
    """Prompt tokens served from the replicas' prefix caches / prompt tokens looked up."""
    replica_requests: list[int] = field(default_factory=list)
    """Requests each replica finished (vLLM's counters), in replica order."""


def summarize(
    policy: str,
    samples: Sequence[RequestSample],
    wall_s: float,
    cache_deltas: Sequence[CacheCounters] = (),
) -> PolicySummary:
    """The summary of ``samples`` measured over ``wall_s`` seconds (summed over rounds),
    with each replica's counter deltas over the same phases."""
    good = [s for s in samples if s.ok and s.ttft_s is not None and s.latency_s is not None]
    ttfts = [s.ttft_s for s in good if s.ttft_s is not None] or [math.nan]
    latencies = [s.latency_s for s in good if s.latency_s is not None] or [math.nan]
    queries = sum(delta.queries for delta in cache_deltas)
    hits = sum(delta.hits for delta in cache_deltas)
    return PolicySummary(
        policy=policy,
        requests=len(samples),
        errors=len(samples) - len(good),
        wall_s=wall_s,
        ttft_p50_s=percentile(ttfts, 50),
        ttft_p90_s=percentile(ttfts, 90),
        ttft_p99_s=percentile(ttfts, 99),
        latency_p50_s=percentile(latencies, 50),
        output_tok_s=sum(s.completion_tokens for s in good) / wall_s if wall_s > 0 else 0.0,
        requests_per_s=len(good) / wall_s if wall_s > 0 else 0.0,
        prompt_tokens=sum(s.prompt_tokens for s in good),
        cache_hit_rate=hits / queries if queries > 0 else None,
        replica_requests=[round(delta.requests) for delta in cache_deltas],
    )


def ttft_ratio(
    summaries: Iterable[PolicySummary],
    numerator: str = "prefix_affinity",
    denominator: str = "round_robin",
) -> float | None:
    """``numerator``'s TTFT p50 over ``denominator``'s; None unless both were measured."""
    by_name: Mapping[str, PolicySummary] = {s.policy: s for s in summaries}
    top, bottom = by_name.get(numerator), by_name.get(denominator)
    if top is None or bottom is None or not bottom.ttft_p50_s > 0:
        return None
    return top.ttft_p50_s / bottom.ttft_p50_s


def render_table(summaries: Sequence[PolicySummary]) -> str:
    """A Markdown table, one row per policy; times in seconds."""
    lines = [
        "| policy | TTFT p50 | TTFT p90 | TTFT p99 | latency p50 | output tok/s | req/s "
        "| errors | prefix-cache hits | requests per replica |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for s in summaries:
        hits = "n/a" if s.cache_hit_rate is None else f"{s.cache_hit_rate:.0%}"
        split = " / ".join(str(count) for count in s.replica_requests) or "n/a"
        lines.append(
            f"| {s.policy} | {s.ttft_p50_s:.2f} s | {s.ttft_p90_s:.2f} s | {s.ttft_p99_s:.2f} s "
            f"| {s.latency_p50_s:.2f} s | {s.output_tok_s:.1f} | {s.requests_per_s:.2f} "
            f"| {s.errors}/{s.requests} | {hits} | {split} |"
        )
    return "\n".join(lines)
