"""Session affinity: one client session, one replica — consistent hashing with bounded loads."""

from __future__ import annotations

import random
from collections.abc import Sequence

from aiforge.router.base import Endpoint, RoutingPolicy, RoutingRequest
from aiforge.router.policies._hashing import DEFAULT_VIRTUAL_NODES, HashRing, stable_hash
from aiforge.router.policies._load import LoadBound, power_of_two_choices

__all__ = ["SessionAffinityPolicy"]


class SessionAffinityPolicy(RoutingPolicy):
    """Sends every request of a session (``user`` field or ``x-session-id``) to its home.

    A session's home is its place on a hash ring of the ready replicas (virtual nodes), so
    adding or removing one of n replicas re-homes only about 1/n of the sessions and needs
    no table of sessions. The home must pass the :class:`LoadBound`; when it is full the
    request goes to the next replica clockwise that is not, the same overflow for every
    request of that session, and the session returns home once the load drops. Requests
    without a session go to the less loaded of two random admitted replicas.
    """

    name = "session_affinity"

    def __init__(
        self,
        *,
        load_bound: LoadBound | None = None,
        virtual_nodes: int = DEFAULT_VIRTUAL_NODES,
        rng: random.Random | None = None,
    ) -> None:
        self._bound = load_bound or LoadBound()
        self._ring = HashRing(virtual_nodes=virtual_nodes)
        self._rng = rng or random.Random()

    def select(self, candidates: Sequence[Endpoint], request: RoutingRequest) -> Endpoint:
        admitted = self._bound.admitted(candidates)
        if request.session is None:
            return power_of_two_choices(admitted, self._rng)
        self._ring.include(endpoint.id for endpoint in candidates)
        by_id = {endpoint.id: endpoint for endpoint in admitted}
        for replica_id in self._ring.walk(stable_hash(request.session)):
            endpoint = by_id.get(replica_id)
            if endpoint is not None:
                return endpoint
        return power_of_two_choices(admitted, self._rng)  # not reached: all are on the ring

    def on_replicas_changed(self, endpoints: Sequence[Endpoint]) -> None:
        self._ring.set_members(endpoint.id for endpoint in endpoints)
