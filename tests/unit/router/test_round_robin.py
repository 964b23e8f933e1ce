from collections import Counter

from aiforge.router.base import Endpoint, RoutingRequest
from aiforge.router.policies.round_robin import RoundRobinPolicy

REQUEST = RoutingRequest(request_id="req", model="chat")


def endpoints(count: int) -> list[Endpoint]:
    return [Endpoint(id=f"r{i}", deployment="chat", url=f"http://r{i}") for i in range(count)]


def test_cycles_through_candidates_in_order() -> None:
    replicas = endpoints(3)
    policy = RoundRobinPolicy()

    chosen = [policy.select(replicas, REQUEST).id for _ in range(7)]

    assert chosen == ["r0", "r1", "r2", "r0", "r1", "r2", "r0"]


def test_ignores_load() -> None:
    replicas = endpoints(2)
    replicas[0].in_flight = 100
    policy = RoundRobinPolicy()

    chosen = Counter(policy.select(replicas, REQUEST).id for _ in range(10))

    assert chosen == {"r0": 5, "r1": 5}


def test_keeps_cycling_when_candidates_shrink() -> None:
    replicas = endpoints(3)
    policy = RoundRobinPolicy()
    policy.select(replicas, REQUEST)

    retry_candidates = replicas[1:]  # r0 excluded after a failure
    chosen = [policy.select(retry_candidates, REQUEST).id for _ in range(4)]

    assert chosen == ["r2", "r1", "r2", "r1"]
