"""The replica directory: the gateway's in-memory view of every deployment's replicas.

The controller *publishes* to it (a whole snapshot of routes, swapped in at once) whenever
a replica's state changes; the gateway only reads it on the request path — one dict lookup
for the deployment, then its policy's choice. Request start/end go through
:class:`DeploymentRouter`, which keeps each endpoint's in-flight count and recent
throughput (the controller reads them to drain replicas and for ``aiforge status``).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from aiforge.router.base import Endpoint, RoutingPolicy, RoutingRequest
from aiforge.router.registry import UnknownPolicyError, make_policy

__all__ = ["DeploymentRoute", "DeploymentRouter", "ReplicaDirectory", "RoutableReplica"]

log = logging.getLogger(__name__)

Clock = Callable[[], float]
FALLBACK_POLICY = "least_outstanding"
THROUGHPUT_WINDOW_S = 30.0
UNREACHABLE_FOR_S = 5.0
"""How long an endpoint the gateway could not reach is skipped, unless the controller
publishes news of it sooner (its health checks run every second)."""


@dataclass(frozen=True, slots=True)
class RoutableReplica:
    """One replica as the controller publishes it."""

    id: str
    url: str
    state: str
    """A :class:`~aiforge.cluster.replicas.ReplicaState` value; only ``ready`` is routed to."""
    dialect: str = "openai"
    node: str = "local"


@dataclass(frozen=True, slots=True)
class DeploymentRoute:
    """One deployment as the controller publishes it."""

    name: str
    policy: str
    replicas: tuple[RoutableReplica, ...] = ()
    projects: frozenset[str] | None = None
    """Projects that may use it; None: every project."""
    max_model_len: int | None = None
    """Its context length in tokens, when the spec states it (admission bounds requests by
    it); None: unknown."""


def _policy(name: str) -> RoutingPolicy:
    """The policy called ``name``; an unknown name (a spec stored by a newer version) routes
    by least outstanding requests rather than not at all."""
    try:
        return make_policy(name)
    except UnknownPolicyError:
        log.warning("unknown routing policy %r: using %s", name, FALLBACK_POLICY)
        return make_policy(FALLBACK_POLICY)


class _Throughput:
    """Completion tokens per second over the last :data:`THROUGHPUT_WINDOW_S` seconds."""

    __slots__ = ("_events", "_total")

    def __init__(self) -> None:
        self._events: deque[tuple[float, int]] = deque()
        self._total = 0

    def add(self, now: float, tokens: int) -> None:
        if tokens > 0:
            self._events.append((now, tokens))
            self._total += tokens
        self._expire(now)

    def rate(self, now: float) -> float:
        self._expire(now)
        return self._total / THROUGHPUT_WINDOW_S

    def _expire(self, now: float) -> None:
        while self._events and self._events[0][0] < now - THROUGHPUT_WINDOW_S:
            self._total -= self._events.popleft()[1]


class DeploymentRouter:
    """One deployment's routing: its policy, endpoints and their loads."""

    def __init__(self, route: DeploymentRoute, clock: Clock) -> None:
        self.name = route.name
        self.policy_name = route.policy
        self.policy: RoutingPolicy = _policy(route.policy)
        self.projects = route.projects
        self.max_model_len = route.max_model_len
        self._clock = clock
        self._endpoints: dict[str, Endpoint] = {}
        self._states: dict[str, str] = {}
        self._ready: tuple[Endpoint, ...] = ()
        self._throughput: dict[str, _Throughput] = {}
        self._unreachable: dict[str, float] = {}
        self._route: DeploymentRoute | None = None
        self.update(route)

    def update(self, route: DeploymentRoute) -> None:
        """Take the controller's new view of this deployment (keeps in-flight counts)."""
        if route == self._route:
            return
        self._route = route
        if route.policy != self.policy_name:
            self.policy_name, self.policy = route.policy, _policy(route.policy)
        self.projects = route.projects
        self.max_model_len = route.max_model_len
        endpoints: dict[str, Endpoint] = {}
        for replica in route.replicas:
            endpoint = self._endpoints.get(replica.id)
            if endpoint is None or endpoint.url != replica.url:
                endpoint = Endpoint(
                    id=replica.id, deployment=route.name, url=replica.url,
                    dialect=replica.dialect, node=replica.node,
                )  # fmt: skip
            endpoints[replica.id] = endpoint
        self._endpoints = endpoints
        self._states = {r.id: r.state for r in route.replicas}
        self._ready = tuple(endpoints[r.id] for r in route.replicas if r.state == "ready")
        self._throughput = {i: self._throughput.get(i) or _Throughput() for i in endpoints}
        self.policy.on_replicas_changed(self._ready)

    def visible_to(self, project_id: str) -> bool:
        return self.projects is None or project_id in self.projects

    def select(self, request: RoutingRequest, *, exclude: Iterable[str] = ()) -> Endpoint | None:
        """The endpoint for ``request`` among ready ones not in ``exclude``; None if none."""
        skip = set(exclude)
        if self._unreachable:
            now = self._clock()
            self._unreachable = {i: t for i, t in self._unreachable.items() if t > now}
            skip.update(self._unreachable)
        candidates = [e for e in self._ready if e.id not in skip] if skip else self._ready
        if not candidates:
            return None
        return self.policy.select(candidates, request)

    def begin(self, endpoint: Endpoint, request: RoutingRequest) -> None:
        endpoint.in_flight += 1
        self.policy.on_request_start(endpoint, request)

    def end(
        self, endpoint: Endpoint, request: RoutingRequest, *, ok: bool, tokens: int = 0
    ) -> None:
        endpoint.in_flight = max(0, endpoint.in_flight - 1)
        meter = self._throughput.get(endpoint.id)
        if meter is not None:
            meter.add(self._clock(), tokens)
        self.policy.on_request_end(endpoint, request, ok=ok)

    def report_unreachable(self, endpoint: Endpoint) -> None:
        """The gateway could not reach ``endpoint``: skip it for a few seconds (the
        controller's next publication decides its state)."""
        self._unreachable[endpoint.id] = self._clock() + UNREACHABLE_FOR_S

    def in_flight(self, replica_id: str) -> int:
        endpoint = self._endpoints.get(replica_id)
        return endpoint.in_flight if endpoint is not None else 0

    def in_flight_total(self) -> int:
        """Requests in flight on all of this deployment's endpoints (the batch runner
        compares it with its own lines to yield to interactive traffic)."""
        return sum(endpoint.in_flight for endpoint in self._endpoints.values())

    def tokens_per_s(self, replica_id: str) -> float:
        meter = self._throughput.get(replica_id)
        return meter.rate(self._clock()) if meter is not None else 0.0

    def why_none(self) -> str:
        """Why no replica can take a request now, for the 503's message."""
        states = sorted(set(self._states.values()))
        return "replicas are " + ", ".join(states) if states else "no replica is running"

    @property
    def ready_count(self) -> int:
        return len(self._ready)


class ReplicaDirectory:
    """Every deployment's :class:`DeploymentRouter`, by the model name clients send."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._routers: dict[str, DeploymentRouter] = {}

    def publish(self, routes: Sequence[DeploymentRoute]) -> None:
        """Replace the whole view: deployments not in ``routes`` disappear."""
        routers: dict[str, DeploymentRouter] = {}
        for route in routes:
            router = self._routers.get(route.name)
            if router is None:
                router = DeploymentRouter(route, self._clock)
            else:
                router.update(route)
            routers[route.name] = router
        self._routers = routers

    def router(self, model: str) -> DeploymentRouter | None:
        return self._routers.get(model)

    def models(self, project_id: str | None = None) -> list[str]:
        """Deployment names, all or those visible to ``project_id``."""
        return sorted(
            name
            for name, router in self._routers.items()
            if project_id is None or router.visible_to(project_id)
        )

    def in_flight(self, deployment: str, replica_id: str) -> int:
        router = self._routers.get(deployment)
        return router.in_flight(replica_id) if router is not None else 0

    def tokens_per_s(self, deployment: str, replica_id: str) -> float:
        router = self._routers.get(deployment)
        return router.tokens_per_s(replica_id) if router is not None else 0.0

    def ready_count(self) -> int:
        return sum(router.ready_count for router in self._routers.values())

    def ready_count_of(self, deployment: str) -> int:
        router = self._routers.get(deployment)
        return router.ready_count if router is not None else 0

    def __len__(self) -> int:
        return len(self._routers)
