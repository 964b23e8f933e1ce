"""Round robin: each request to the next replica in turn, blind to load and content."""

from __future__ import annotations

from collections.abc import Sequence

from aiforge.router.base import Endpoint, RoutingPolicy, RoutingRequest

__all__ = ["RoundRobinPolicy"]


class RoundRobinPolicy(RoutingPolicy):
    """Cycles through the candidates in the order the directory lists them.

    The baseline the other policies are measured against: even by request count, but a
    replica stuck on long generations keeps getting its share, and no two turns of one
    conversation are likely to share a replica's prefix cache. When the candidates change
    (a replica added or excluded for a retry) the cycle simply continues over the new list.
    """

    name = "round_robin"

    def __init__(self) -> None:
        self._turn = 0

    def select(self, candidates: Sequence[Endpoint], request: RoutingRequest) -> Endpoint:
        endpoint = candidates[self._turn % len(candidates)]
        self._turn += 1
        return endpoint
