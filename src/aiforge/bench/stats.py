"""The numbers ``aiforge bench`` reports: pure functions of the samples, no I/O.

Definitions (the same for every server, so results compare):

* **TTFT**: seconds from sending a request to the first chunk carrying generated text
  (content, reasoning or completion text); without streaming there is none.
* **ITL** (inter-token latency): the gaps between successive text-bearing chunks of a
  stream, pooled over every request for the percentiles. A server that packs several
  tokens in a chunk shows fewer, longer gaps; **TPOT** (time per output token, per
  request: ``(e2e - ttft) / (output_tokens - 1)``) is immune to that.
* **E2E**: seconds from sending to the end of the response.
* **Throughput**: over the measured window, from the first request sent to the last one
  finished: successful requests per second and their output tokens per second.
* **Goodput**: successful requests per second that met every :class:`SLO` given.

Percentiles interpolate linearly between closest ranks, as numpy's default does.
"""

from __future__ import annotations

import math
import re
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "SLO",
    "Distribution",
    "LoadSummary",
    "RequestSample",
    "distribution",
    "percentile",
    "summarize",
]


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, linearly interpolated between the
    closest ranks (numpy's default ``linear`` method). ``values`` must not be empty."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"q must lie in [0, 100], got {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True, slots=True)
class Distribution:
    """Summary of a set of durations, in seconds."""

    count: int
    mean: float
    p50: float
    p90: float
    p99: float
    min: float
    max: float


def distribution(values: Sequence[float]) -> Distribution | None:
    """The :class:`Distribution` of ``values``; None when there are none."""
    if not values:
        return None
    return Distribution(
        count=len(values), mean=statistics.fmean(values), p50=percentile(values, 50),
        p90=percentile(values, 90), p99=percentile(values, 99), min=min(values),
        max=max(values),
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class RequestSample:
    """One request as the client saw it; times in seconds."""

    index: int
    start_s: float
    """When it was sent, from the start of its load level."""
    e2e_s: float
    """Sending to the end of the response (to the failure, for a failed request)."""
    ttft_s: float | None = None
    """Sending to the first generated text; None without streaming or on failure."""
    itl_s: tuple[float, ...] = ()
    """Gaps between successive text-bearing chunks."""
    output_tokens: int = 0
    prompt_tokens: int | None = None
    tokens_from: str = "usage"
    """``usage`` (the server's count) or ``chunks`` (text-bearing chunks counted)."""
    scheduled_s: float | None = None
    """Rate loads: its Poisson arrival time; it was sent late when ``start_s`` is later."""
    conversation: int | None = None
    turn: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def end_s(self) -> float:
        return self.start_s + self.e2e_s

    @property
    def tpot_s(self) -> float | None:
        """Time per output token after the first; None unless streamed with 2+ tokens."""
        if self.ttft_s is None or self.output_tokens < 2:
            return None
        return (self.e2e_s - self.ttft_s) / (self.output_tokens - 1)

    @property
    def mean_itl_s(self) -> float | None:
        return statistics.fmean(self.itl_s) if self.itl_s else None


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s)?$")
_SLO_KEYS = ("ttft", "itl", "tpot", "e2e")


@dataclass(frozen=True, slots=True)
class SLO:
    """Service-level objectives, each optional, in seconds: a request is *good* when it
    succeeded and its TTFT, mean ITL, TPOT and E2E are each at most the bound given."""

    ttft_s: float | None = None
    itl_s: float | None = None
    tpot_s: float | None = None
    e2e_s: float | None = None

    @classmethod
    def parse(cls, text: str) -> SLO:
        """``ttft=0.5s,itl=50ms,tpot=40ms,e2e=10`` (seconds when no unit); ``ValueError``
        otherwise."""
        bounds: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, _, value = part.partition("=")
            key = key.strip().lower()
            match = _DURATION.match(value.strip().lower())
            if key not in _SLO_KEYS or match is None:
                raise ValueError(
                    f"bad SLO {part!r}: use KEY=DURATION with KEY one of {', '.join(_SLO_KEYS)}"
                    " and DURATION like 500ms or 0.5s"
                )
            scale = 0.001 if match.group(2) == "ms" else 1.0
            bounds[f"{key}_s"] = float(match.group(1)) * scale
        return cls(**bounds)

    @property
    def empty(self) -> bool:
        return all(v is None for v in (self.ttft_s, self.itl_s, self.tpot_s, self.e2e_s))

    @property
    def needs_streaming(self) -> bool:
        return any(v is not None for v in (self.ttft_s, self.itl_s, self.tpot_s))

    def met_by(self, sample: RequestSample) -> bool:
        """True when ``sample`` succeeded and meets every bound (an unmeasured quantity
        with a bound fails it)."""
        if not sample.ok:
            return False
        checks = (
            (self.ttft_s, sample.ttft_s), (self.itl_s, sample.mean_itl_s),
            (self.tpot_s, sample.tpot_s), (self.e2e_s, sample.e2e_s),
        )  # fmt: skip
        return all(bound is None or (v is not None and v <= bound) for bound, v in checks)


@dataclass(frozen=True, slots=True)
class LoadSummary:
    """One load level's results."""

    requests: int
    completed: int
    errors: int
    duration_s: float
    """The measured window: first request sent to last one finished."""
    requests_per_s: float
    output_tokens_per_s: float
    output_tokens: int
    prompt_tokens: int | None
    ttft: Distribution | None
    itl: Distribution | None
    tpot: Distribution | None
    e2e: Distribution | None
    goodput_per_s: float | None
    """Good requests per second (None without an SLO)."""
    good_fraction: float | None
    mean_concurrency: float
    """Requests in flight on average over the window (every request's time / window)."""
    max_send_lag_s: float | None
    """Rate loads: the latest any request went out after its arrival time."""
    error_kinds: dict[str, int]
    """Distinct error messages and how often each occurred."""


def summarize(samples: Sequence[RequestSample], slo: SLO | None = None) -> LoadSummary:
    """The :class:`LoadSummary` of one load level's ``samples``."""
    good = [s for s in samples if s.ok]
    window = _window(samples)
    per_s = (lambda n: n / window) if window > 0 else (lambda n: 0.0)
    output = sum(s.output_tokens for s in good)
    prompts = [s.prompt_tokens for s in good if s.prompt_tokens is not None]
    lags = [s.start_s - s.scheduled_s for s in samples if s.scheduled_s is not None]
    met = sum(1 for s in good if slo.met_by(s)) if slo is not None and not slo.empty else None
    return LoadSummary(
        requests=len(samples),
        completed=len(good),
        errors=len(samples) - len(good),
        duration_s=window,
        requests_per_s=per_s(len(good)),
        output_tokens_per_s=per_s(output),
        output_tokens=output,
        prompt_tokens=sum(prompts) if prompts else None,
        ttft=distribution([s.ttft_s for s in good if s.ttft_s is not None]),
        itl=distribution([gap for s in good for gap in s.itl_s]),
        tpot=distribution([t for s in good if (t := s.tpot_s) is not None]),
        e2e=distribution([s.e2e_s for s in good]),
        goodput_per_s=None if met is None else per_s(met),
        good_fraction=None if met is None or not samples else met / len(samples),
        mean_concurrency=per_s(sum(s.e2e_s for s in samples)),
        max_send_lag_s=max(lags) if lags else None,
        error_kinds=dict(Counter(s.error for s in samples if s.error is not None)),
    )


def _window(samples: Sequence[RequestSample]) -> float:
    """First send to last end, failed requests included."""
    if not samples:
        return 0.0
    return max(s.end_s for s in samples) - min(s.start_s for s in samples)
