import random
from collections import Counter

from aiforge.router.base import Endpoint, RoutingRequest
from aiforge.router.policies.least_outstanding import LeastOutstandingPolicy

REQUEST = RoutingRequest(request_id="req", model="chat")


def endpoints(*loads: int) -> list[Endpoint]:
    return [
        Endpoint(id=f"r{i}", deployment="chat", url=f"http://r{i}", in_flight=load)
        for i, load in enumerate(loads)
    ]


def test_single_candidate_is_returned() -> None:
    (only,) = endpoints(9)

    assert LeastOutstandingPolicy(random.Random(0)).select([only], REQUEST) is only


def test_of_two_always_the_less_loaded() -> None:
    replicas = endpoints(3, 1)
    policy = LeastOutstandingPolicy(random.Random(0))

    assert {policy.select(replicas, REQUEST).id for _ in range(200)} == {"r1"}


def test_never_the_single_most_loaded() -> None:
    replicas = endpoints(5, 0, 0, 0)
    policy = LeastOutstandingPolicy(random.Random(1))

    chosen = Counter(policy.select(replicas, REQUEST).id for _ in range(300))

    assert "r0" not in chosen
    assert set(chosen) == {"r1", "r2", "r3"}


def test_ties_are_broken_at_random() -> None:
    replicas = endpoints(2, 2)
    policy = LeastOutstandingPolicy(random.Random(2))

    chosen = Counter(policy.select(replicas, REQUEST).id for _ in range(400))

    assert 140 < chosen["r0"] < 260


def test_same_seed_same_choices() -> None:
    replicas = endpoints(1, 0, 2, 0, 1)
    first = LeastOutstandingPolicy(random.Random(7))
    second = LeastOutstandingPolicy(random.Random(7))

    assert [first.select(replicas, REQUEST).id for _ in range(50)] == [
        second.select(replicas, REQUEST).id for _ in range(50)
    ]


def test_keeps_loads_close_as_requests_pile_up() -> None:
    replicas = endpoints(0, 0, 0, 0, 0, 0, 0, 0)
    policy = LeastOutstandingPolicy(random.Random(3))

    for _ in range(400):
        policy.select(replicas, REQUEST).in_flight += 1

    loads = [replica.in_flight for replica in replicas]
    assert max(loads) - min(loads) <= 3, loads
