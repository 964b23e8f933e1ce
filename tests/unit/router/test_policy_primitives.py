"""The pieces the affinity policies share: stable hashes, the ring, the load bound."""

import pytest

from aiforge.router.base import Endpoint
from aiforge.router.policies._hashing import HashRing, chain_hashes, stable_hash
from aiforge.router.policies._load import LoadBound


def endpoints(*loads: int) -> list[Endpoint]:
    return [
        Endpoint(id=f"r{i}", deployment="chat", url=f"http://r{i}", in_flight=load)
        for i, load in enumerate(loads)
    ]


def test_stable_hash_is_the_same_in_every_process() -> None:
    # A fixed value: a salted hash would differ between runs and between gateways.
    assert stable_hash("session-42") == 0x28BD467CBC4B1AAC
    assert stable_hash("\ud800 lone surrogate") != stable_hash("")


def test_chain_hash_names_the_whole_prefix() -> None:
    a = chain_hashes("x" * 8 + "AAAA" + "tail", 4)
    b = chain_hashes("y" * 4 + "x" * 4 + "AAAA", 4)

    assert len(a) == 4  # 16 characters: four full blocks
    assert a[1] != b[1]  # same block text, different history
    assert chain_hashes("x" * 8 + "AAAA" + "tai", 4) == a[:3]  # partial block not hashed
    assert chain_hashes("abc", 4) == []


def test_ring_walk_yields_each_member_once_starting_at_the_home() -> None:
    ring = HashRing(["a", "b", "c"], virtual_nodes=16)
    key = stable_hash("k")

    order = list(ring.walk(key))

    assert sorted(order) == ["a", "b", "c"]
    assert order[0] == ring.home(key)
    assert HashRing().home(key) is None


def test_ring_moves_only_the_keys_of_a_new_member() -> None:
    keys = [stable_hash(f"key-{i}") for i in range(2000)]
    ring = HashRing(["a", "b", "c", "d"])
    before = [ring.home(key) for key in keys]

    ring.include(["e"])
    after = [ring.home(key) for key in keys]

    moved = [(old, new) for old, new in zip(before, after, strict=True) if old != new]
    assert all(new == "e" for _, new in moved)
    assert 0.12 < len(moved) / len(keys) < 0.28  # about 1/5


def test_load_bound_limit_and_admission() -> None:
    bound = LoadBound(factor=1.25, slack=0)
    replicas = endpoints(4, 2, 1, 1)  # total 8 → ceil(1.25 * 9 / 4) = 3

    assert bound.limit(replicas) == 3
    assert [r.id for r in bound.admitted(replicas)] == ["r1", "r2", "r3"]
    assert LoadBound(slack=2).limit(replicas) == 5


@pytest.mark.parametrize("loads", [(0,), (7, 0), (3, 3, 3), (9, 0, 0, 0), (1, 2, 3, 50)])
def test_load_bound_always_admits_someone(loads: tuple[int, ...]) -> None:
    assert LoadBound(factor=1.0, slack=0).admitted(endpoints(*loads))


def test_load_bound_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="factor"):
        LoadBound(factor=0.9)
    with pytest.raises(ValueError, match="slack"):
        LoadBound(slack=-1)
