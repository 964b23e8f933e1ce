import random
from collections import Counter

from aiforge.router.base import Endpoint, RoutingRequest
from aiforge.router.policies._load import LoadBound
from aiforge.router.policies.session_affinity import SessionAffinityPolicy

SESSIONS = [f"user-{i}" for i in range(1000)]


def endpoints(count: int) -> list[Endpoint]:
    return [Endpoint(id=f"r{i}", deployment="chat", url=f"http://r{i}") for i in range(count)]


def request(session: str | None) -> RoutingRequest:
    return RoutingRequest(request_id="req", model="chat", session=session)


def policy_over(replicas: list[Endpoint]) -> SessionAffinityPolicy:
    policy = SessionAffinityPolicy(rng=random.Random(0))
    policy.on_replicas_changed(replicas)
    return policy


def homes(policy: SessionAffinityPolicy, replicas: list[Endpoint]) -> dict[str, str]:
    return {s: policy.select(replicas, request(s)).id for s in SESSIONS}


def test_a_session_always_goes_home() -> None:
    replicas = endpoints(4)
    policy = policy_over(replicas)

    assert len({policy.select(replicas, request("alice")).id for _ in range(20)}) == 1


def test_sessions_spread_roughly_evenly() -> None:
    replicas = endpoints(4)

    counts = Counter(homes(policy_over(replicas), replicas).values())

    assert set(counts) == {"r0", "r1", "r2", "r3"}
    assert all(175 <= count <= 325 for count in counts.values()), counts


def test_adding_a_replica_moves_only_sessions_to_it() -> None:
    replicas = endpoints(5)
    policy = policy_over(replicas[:4])
    before = homes(policy, replicas[:4])

    policy.on_replicas_changed(replicas)
    after = homes(policy, replicas)

    moved = {s for s in SESSIONS if before[s] != after[s]}
    assert {after[s] for s in moved} == {"r4"}
    assert 0.12 < len(moved) / len(SESSIONS) < 0.28  # about 1/5


def test_removing_a_replica_moves_only_its_sessions() -> None:
    replicas = endpoints(4)
    policy = policy_over(replicas)
    before = homes(policy, replicas)

    remaining = [r for r in replicas if r.id != "r2"]
    policy.on_replicas_changed(remaining)
    after = homes(policy, remaining)

    assert {s for s in SESSIONS if before[s] != after[s]} == {
        s for s in SESSIONS if before[s] == "r2"
    }
    assert "r2" not in after.values()


def test_full_home_overflows_to_the_same_next_replica_and_comes_back() -> None:
    replicas = endpoints(4)
    policy = SessionAffinityPolicy(load_bound=LoadBound(slack=0), rng=random.Random(0))
    policy.on_replicas_changed(replicas)
    home = policy.select(replicas, request("alice"))

    home.in_flight = 6  # total 6 over 4 → limit ceil(1.25 * 7 / 4) = 3
    overflow = {policy.select(replicas, request("alice")).id for _ in range(10)}
    home.in_flight = 0
    back = policy.select(replicas, request("alice"))

    assert len(overflow) == 1
    assert home.id not in overflow
    assert back is home


def test_without_a_session_least_outstanding() -> None:
    replicas = endpoints(2)
    replicas[0].in_flight = 2
    policy = policy_over(replicas)

    assert {policy.select(replicas, request(None)).id for _ in range(50)} == {"r1"}


def test_works_before_it_hears_of_replicas() -> None:
    replicas = endpoints(3)
    told = policy_over(replicas)
    untold = SessionAffinityPolicy()

    assert homes(untold, replicas) == homes(told, replicas)
