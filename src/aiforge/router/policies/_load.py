"""Load-aware choices shared by the policies: power of two choices and the load bound."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from aiforge.router.base import Endpoint

__all__ = ["LoadBound", "power_of_two_choices"]


def power_of_two_choices(candidates: Sequence[Endpoint], rng: random.Random) -> Endpoint:
    """The less loaded of two distinct candidates drawn at random (ties broken at random).

    Two random probes keep the most loaded replica's excess at O(log log n) over the mean
    (Mitzenmacher), without the herding that "always the least loaded" causes when many
    decisions are made on the same stale counts. ``candidates`` must not be empty; a
    single candidate is returned as is.
    """
    if len(candidates) == 1:
        return candidates[0]
    first, second = rng.sample(range(len(candidates)), 2)
    a, b = candidates[first], candidates[second]
    if a.in_flight != b.in_flight:
        return a if a.in_flight < b.in_flight else b
    return a if rng.random() < 0.5 else b


@dataclass(frozen=True, slots=True)
class LoadBound:
    """Bounded loads for affinity policies: how much busier than average a replica may get.

    A replica may take a request only if, with it, it holds at most
    ``ceil(factor * (total + 1) / n) + slack`` requests, where ``total`` is the in-flight
    count over the ``n`` candidates (``+ 1``: the request being placed). With
    ``factor >= 1`` some candidate is always admitted (the least loaded holds at most
    ``floor(total / n)`` requests), so a bound never leaves a request without a home.

    ``factor`` is the relative headroom (1.25: at most 25% above the mean once loads are
    high). ``slack`` is absolute headroom: with a handful of requests in flight the
    relative bound alone would move a conversation off its cached replica for being one
    request busier than an idle one, and a prefix-cache hit is worth more than that.
    """

    factor: float = 1.25
    slack: int = 2

    def __post_init__(self) -> None:
        if self.factor < 1.0:
            raise ValueError("the load bound factor must be at least 1")
        if self.slack < 0:
            raise ValueError("the load bound slack must not be negative")

    def limit(self, candidates: Sequence[Endpoint]) -> int:
        """The most requests one of ``candidates`` may hold after taking the next one."""
        total = sum(endpoint.in_flight for endpoint in candidates)
        return math.ceil(self.factor * (total + 1) / len(candidates)) + self.slack

    def admitted(self, candidates: Sequence[Endpoint]) -> list[Endpoint]:
        """The candidates that may take the next request (never empty if candidates isn't)."""
        limit = self.limit(candidates)
        return [endpoint for endpoint in candidates if endpoint.in_flight + 1 <= limit]
