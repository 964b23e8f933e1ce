import random
from collections import Counter, defaultdict

import pytest

from aiforge.router.base import Endpoint, RoutingRequest
from aiforge.router.policies._load import LoadBound
from aiforge.router.policies.prefix_affinity import PrefixAffinityPolicy, PrefixTable

WORDS = ("the", "model", "replica", "cache", "prefix", "token", "stream", "user", "answer")


def text(seed: int, chars: int) -> str:
    rng = random.Random(seed)
    out = ""
    while len(out) < chars:
        out += rng.choice(WORDS) + " "
    return out[:chars]


class Conversation:
    """A chat that resends its whole history each turn, after a system prompt."""

    def __init__(self, number: int, system_prompt: str) -> None:
        self.number = number
        self.history = system_prompt
        self.turns = 0

    def next_request(self) -> RoutingRequest:
        self.turns += 1
        self.history += text(1000 * self.number + self.turns, 300)  # user message
        request = RoutingRequest(
            request_id=f"c{self.number}-t{self.turns}", model="chat", prefix=self.history
        )
        self.history += text(-1000 * self.number - self.turns, 200)  # the answer
        return request


def endpoints(count: int) -> list[Endpoint]:
    return [Endpoint(id=f"r{i}", deployment="chat", url=f"http://r{i}") for i in range(count)]


def policy_over(
    replicas: list[Endpoint], load_bound: LoadBound | None = None
) -> PrefixAffinityPolicy:
    policy = PrefixAffinityPolicy(load_bound=load_bound, rng=random.Random(0))
    policy.on_replicas_changed(replicas)
    return policy


def start(policy: PrefixAffinityPolicy, replicas: list[Endpoint], req: RoutingRequest) -> Endpoint:
    """What the directory does: select, count it in flight, tell the policy."""
    endpoint = policy.select(replicas, req)
    endpoint.in_flight += 1
    policy.on_request_start(endpoint, req)
    return endpoint


def finish(endpoint: Endpoint) -> None:
    endpoint.in_flight -= 1


def serve_one_at_a_time(
    policy: PrefixAffinityPolicy, replicas: list[Endpoint], conversations: list[Conversation]
) -> dict[int, set[str]]:
    served: dict[int, set[str]] = defaultdict(set)
    for conversation in conversations:
        endpoint = start(policy, replicas, conversation.next_request())
        served[conversation.number].add(endpoint.id)
        finish(endpoint)
    return served


SYSTEM_PROMPTS = [text(-1, 1500), text(-2, 1500)]


def test_each_conversation_stays_on_one_replica_with_all_turns_in_flight_together() -> None:
    replicas = endpoints(4)
    policy = policy_over(replicas)
    conversations = [Conversation(i, SYSTEM_PROMPTS[i % 2]) for i in range(8)]
    served: dict[int, set[str]] = defaultdict(set)

    for _ in range(10):
        running = [(c, start(policy, replicas, c.next_request())) for c in conversations]
        for conversation, endpoint in running:
            served[conversation.number].add(endpoint.id)
        for _, endpoint in running:
            finish(endpoint)

    assert all(len(ids) == 1 for ids in served.values()), served


def test_conversations_sharing_a_system_prompt_colocate_when_load_allows() -> None:
    replicas = endpoints(4)
    policy = policy_over(replicas)
    conversations = [Conversation(i, SYSTEM_PROMPTS[i % 2]) for i in range(8)]

    served: dict[int, set[str]] = defaultdict(set)
    for _ in range(3):
        for number, ids in serve_one_at_a_time(policy, replicas, conversations).items():
            served[number] |= ids

    by_prompt = [{next(iter(served[i])) for i in range(p, 8, 2)} for p in (0, 1)]
    assert all(len(ids) == 1 for ids in served.values())
    assert [len(ids) for ids in by_prompt] == [1, 1]


@pytest.mark.parametrize("slack", [0, 2])
def test_a_burst_on_one_system_prompt_is_spread_within_the_load_bound(slack: int) -> None:
    replicas = endpoints(4)
    bound = LoadBound(factor=1.25, slack=slack)
    policy = policy_over(replicas, load_bound=bound)
    conversations = [Conversation(i, SYSTEM_PROMPTS[0]) for i in range(24)]
    first_home = policy.select(replicas, conversations[0].next_request())

    for conversation in conversations:  # all in flight at once
        limit = bound.limit(replicas)
        endpoint = start(policy, replicas, conversation.next_request())
        assert endpoint.in_flight <= limit

    loads = {r.id: r.in_flight for r in replicas}
    assert sum(1 for load in loads.values() if load) >= 3, loads  # spread...
    assert loads[first_home.id] == max(loads.values()), loads  # ...from the prompt's home


def test_removing_a_replica_rehomes_only_its_conversations() -> None:
    replicas = endpoints(4)
    policy = policy_over(replicas)
    conversations = [Conversation(i, text(-10 - i, 1500)) for i in range(8)]
    for _ in range(3):
        before = serve_one_at_a_time(policy, replicas, conversations)
    home = {number: next(iter(ids)) for number, ids in before.items()}
    removed = home[0]

    remaining = [r for r in replicas if r.id != removed]
    policy.on_replicas_changed(remaining)
    after: dict[int, set[str]] = defaultdict(set)
    for _ in range(3):
        for number, ids in serve_one_at_a_time(policy, remaining, conversations).items():
            after[number] |= ids

    assert len(set(home.values())) >= 3  # distinct prompts spread over the ring
    for number, ids in after.items():
        assert len(ids) == 1  # re-homed once, then sticky
        if home[number] != removed:
            assert ids == {home[number]}
    assert removed not in set().union(*after.values())


def test_the_longest_match_wins_over_a_shallow_one() -> None:
    replicas = endpoints(2)
    policy = policy_over(replicas)
    system_prompt = text(-3, 1000)
    policy.on_request_start(replicas[1], Conversation(2, system_prompt).next_request())
    first = Conversation(1, system_prompt)
    policy.on_request_start(replicas[0], first.next_request())  # e.g. spilled by load

    assert policy.select(replicas, first.next_request()) is replicas[0]
    assert policy.select(replicas, Conversation(3, system_prompt).next_request()) is replicas[1]


def test_a_full_cache_holder_spills_by_load() -> None:
    replicas = endpoints(4)
    policy = policy_over(replicas)
    conversation = Conversation(1, SYSTEM_PROMPTS[0])
    holder = start(policy, replicas, conversation.next_request())
    holder.in_flight = 10  # total 10 over 4 → limit ceil(1.25 * 11 / 4) + 2 = 6

    chosen = Counter(policy.select(replicas, conversation.next_request()).id for _ in range(30))

    assert holder.id not in chosen
    assert len(chosen) >= 2  # least outstanding among the rest, not one fixed overflow


@pytest.mark.parametrize("seed", range(5))
def test_new_prefix_groups_are_spread_evenly_over_the_replicas(seed: int) -> None:
    """Few long system prompts must not pile up on one replica (a hash ring alone put 3 of
    4 on one replica in the routing benchmark, and its queue cost more than the cache
    saved); each then stays home."""
    replicas = endpoints(2)
    policy = policy_over(replicas)
    conversations = [Conversation(i, text(100 * seed + i, 1500)) for i in range(8)]
    for _ in range(2):
        served = serve_one_at_a_time(policy, replicas, conversations)
    homes = Counter(next(iter(ids)) for ids in served.values())
    assert sorted(homes.values()) == [4, 4]
    assert all(len(ids) == 1 for ids in served.values())


def test_a_cold_prefix_goes_to_the_ring_home_of_its_first_block() -> None:
    replicas = endpoints(4)
    shared = text(-4, 128)
    homes = {
        policy_over(replicas).select(replicas, RoutingRequest("r", "chat", shared + tail)).id
        for tail in (text(1, 500), text(2, 900), text(3, 50))
    }

    assert len(homes) == 1


def test_a_match_on_an_excluded_replica_counts_as_cold() -> None:
    replicas = endpoints(3)
    policy = policy_over(replicas)
    req = Conversation(1, SYSTEM_PROMPTS[0]).next_request()
    holder = start(policy, replicas, req)
    others = [r for r in replicas if r is not holder]

    assert policy.select(others, req) is policy_over(others).select(others, req)


def test_a_failover_hands_the_prefix_to_the_replica_that_served_it() -> None:
    replicas = endpoints(3)
    policy = policy_over(replicas)
    conversation = Conversation(1, SYSTEM_PROMPTS[0])
    req = conversation.next_request()
    failed = start(policy, replicas, req)
    finish(failed)
    policy.on_request_end(failed, req, ok=False)  # before the first byte

    others = [r for r in replicas if r is not failed]
    served = start(policy, others, req)
    finish(served)
    policy.on_request_end(served, req, ok=True)

    assert policy.select(replicas, conversation.next_request()) is served


def test_prompts_shorter_than_a_block_go_to_the_less_loaded() -> None:
    replicas = endpoints(2)
    replicas[0].in_flight = 3
    policy = policy_over(replicas)
    short = RoutingRequest("r", "chat", prefix="x" * 127)

    assert {policy.select(replicas, short).id for _ in range(30)} == {"r1"}


def test_a_removed_replica_loses_its_entries() -> None:
    replicas = endpoints(2)
    policy = policy_over(replicas)
    policy.on_request_start(replicas[0], RoutingRequest("a", "chat", text(1, 1280)))
    policy.on_request_start(replicas[1], RoutingRequest("b", "chat", text(2, 640)))

    policy.on_replicas_changed(replicas[1:])

    assert len(policy.table) == 5


def test_the_table_is_bounded_and_evicts_deep_blocks_first() -> None:
    table = PrefixTable(max_blocks=8)
    blocks = list(range(20))

    table.record(blocks, "r0")
    assert len(table) == 8
    assert table.match_depths(blocks) == {"r0": 8}  # the head survived

    for i in range(100):
        table.record([1000 + i, 2000 + i], "r1")
    assert len(table) == 8
    assert table.match_depths(blocks) == {}
