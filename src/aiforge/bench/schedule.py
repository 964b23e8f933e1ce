"""When requests go out: pure, seeded, no clock.

A run applies one or more :class:`Load` levels in turn (a sweep):

* ``concurrency`` N: N requests in flight, the next sent as soon as one finishes (a
  closed loop: the offered load adapts to the server's speed);
* ``rate`` R: requests arrive as a Poisson process of R per second (exponential gaps,
  seeded), whatever the server's speed (an open loop: queues grow when it cannot keep up),
  optionally capped at ``max_concurrency`` in flight.

:func:`arrival_offsets` gives the arrival times of a rate, in seconds from the start.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Literal

__all__ = ["Load", "arrival_offsets", "first_arrivals", "parse_loads"]


@dataclass(frozen=True, slots=True)
class Load:
    """One load level: a concurrency or a Poisson request rate (requests per second)."""

    kind: Literal["concurrency", "rate"]
    value: float
    max_concurrency: int | None = None
    """Rate only: at most this many requests in flight (arrivals wait for a slot)."""

    def __post_init__(self) -> None:
        if not self.value > 0 or math.isinf(self.value):
            raise ValueError(f"a {self.kind} must be a positive number, got {self.value}")
        if self.kind == "concurrency" and self.value != int(self.value):
            raise ValueError(f"a concurrency must be a whole number, got {self.value}")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")

    @property
    def slots(self) -> int | None:
        """Requests allowed in flight at once (None: unbounded)."""
        return int(self.value) if self.kind == "concurrency" else self.max_concurrency

    @property
    def label(self) -> str:
        if self.kind == "concurrency":
            return f"concurrency {int(self.value)}"
        return f"rate {self.value:g}/s"


def parse_loads(
    *,
    concurrency: str | None = None,
    rate: str | None = None,
    max_concurrency: int | None = None,
) -> list[Load]:
    """The load levels a command line asks for: a comma-separated list of concurrencies
    or of rates (a sweep when it has several). ``ValueError`` with the reason otherwise."""
    if concurrency is not None and rate is not None:
        raise ValueError("give a concurrency or a request rate, not both")
    if concurrency is None and rate is None:
        concurrency = "1"
    kind: Literal["concurrency", "rate"] = "concurrency" if concurrency is not None else "rate"
    text = concurrency if concurrency is not None else rate
    assert text is not None
    values: list[float] = []
    for part in text.split(","):
        try:
            values.append(float(part.strip()))
        except ValueError:
            raise ValueError(f"not a number in the {kind} list {text!r}: {part!r}") from None
    if not values:
        raise ValueError(f"no {kind} given")
    cap = max_concurrency if kind == "rate" else None
    return [Load(kind, value, cap) for value in values]


def arrival_offsets(rate: float, seed: int) -> Iterator[float]:
    """Arrival times, in seconds from the start, of a Poisson process of ``rate`` per
    second: cumulative exponential gaps of mean ``1 / rate``. Endless; the same seed gives
    the same times."""
    if not rate > 0:
        raise ValueError(f"rate must be positive, got {rate}")
    rng = random.Random(f"arrivals:{seed}")
    at = 0.0
    while True:
        at += rng.expovariate(rate)
        yield at


def first_arrivals(rate: float, seed: int, count: int) -> Sequence[float]:
    """The first ``count`` arrival times of :func:`arrival_offsets`."""
    return list(islice(arrival_offsets(rate, seed), count))
