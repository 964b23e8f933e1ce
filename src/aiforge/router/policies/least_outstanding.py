"""Least outstanding requests, by power of two choices."""

from __future__ import annotations

import random
from collections.abc import Sequence

from aiforge.router.base import Endpoint, RoutingPolicy, RoutingRequest
from aiforge.router.policies._load import power_of_two_choices

__all__ = ["LeastOutstandingPolicy"]


class LeastOutstandingPolicy(RoutingPolicy):
    """Of two distinct replicas drawn at random, the one with fewer requests in flight.

    Sampling two instead of scanning for the global minimum keeps concurrent decisions
    made on the same counts from all landing on one idle replica, while still steering
    away from busy ones (Ray Serve's default router works the same way). Pass a seeded
    ``rng`` for reproducible choices.
    """

    name = "least_outstanding"

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def select(self, candidates: Sequence[Endpoint], request: RoutingRequest) -> Endpoint:
        return power_of_two_choices(candidates, self._rng)
