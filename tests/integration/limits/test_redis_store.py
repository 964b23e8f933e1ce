"""LimitAdmission on the real Redis: same rules as memory, and no overshoot across gateways."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator

import pytest

from aiforge.platform.limits import BudgetUsage, LimitAdmission, LimitPolicy, RedisStore
from aiforge.platform.limits.policy import UNLIMITED
from aiforge.types import LimitExceeded, Principal

pytestmark = pytest.mark.redis


class FakeClock:
    """Starts at the real time: Redis expires keys by its own clock."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def principal() -> Principal:
    # Fresh ids per test: the Redis server is shared.
    tag = uuid.uuid4().hex[:12]
    return Principal(key_id=f"k-{tag}", project_id=f"p-{tag}", organization_id="o", role="member")


@pytest.fixture
async def stores(redis_url: str) -> AsyncIterator[list[RedisStore]]:
    """Three stores, each with its own connection pool: three gateways."""
    opened = [RedisStore.from_url(redis_url) for _ in range(3)]
    yield opened
    for store in opened:
        await store.aclose()


def admission(
    store: RedisStore, key: LimitPolicy, project: LimitPolicy, clock: FakeClock, lease_s: float = 60
) -> LimitAdmission:
    return LimitAdmission(store, lambda _p: (key, project), clock=clock, lease_s=lease_s)


async def test_window_refusal_and_retry_after(
    stores: list[RedisStore], principal: Principal
) -> None:
    clock = FakeClock()
    gate = admission(stores[0], LimitPolicy(requests_per_minute=2), UNLIMITED, clock)
    await gate.admit(principal, "m", 1)
    await gate.admit(principal, "m", 1)
    with pytest.raises(LimitExceeded) as refused:
        await gate.admit(principal, "m", 1)
    assert refused.value.limit_name == "key.requests_per_minute"
    assert 60.0 <= refused.value.retry_after_s <= 61.0


async def test_refusal_changes_nothing_and_settle_corrects_tokens(
    stores: list[RedisStore], principal: Principal
) -> None:
    clock = FakeClock()
    gate = admission(
        stores[0], LimitPolicy(tokens_per_minute=100), LimitPolicy(max_concurrent=1), clock
    )
    first = await gate.admit(principal, "m", 60)
    with pytest.raises(LimitExceeded) as refused:
        await gate.admit(principal, "m", 30)
    assert refused.value.limit_name == "project.max_concurrent"
    await gate.settle(first, 20)
    second = await gate.admit(principal, "m", 80)  # 20 + 80: only if 30 was never reserved
    await gate.settle(second, 80)
    with pytest.raises(LimitExceeded) as refused:
        await gate.admit(principal, "m", 1)
    assert refused.value.limit_name == "key.tokens_per_minute"


async def test_crashed_gateways_slot_expires_live_one_renews(
    stores: list[RedisStore], principal: Principal
) -> None:
    clock = FakeClock()
    policy = LimitPolicy(max_concurrent=1)
    crashed = admission(stores[0], policy, UNLIMITED, clock, lease_s=30)
    survivor = admission(stores[1], policy, UNLIMITED, clock, lease_s=30)
    await crashed.admit(principal, "m", 1)
    clock.now += 20
    with pytest.raises(LimitExceeded):
        await survivor.admit(principal, "m", 1)
    clock.now += 10.01
    ticket = await survivor.admit(principal, "m", 1)
    clock.now += 20
    await survivor.renew_leases()
    clock.now += 20
    with pytest.raises(LimitExceeded):
        await crashed.admit(principal, "m", 1)
    await survivor.settle(ticket, 1)
    await crashed.admit(principal, "m", 1)


async def test_budgets_survive_a_new_admission_and_accept_seeds(
    stores: list[RedisStore], principal: Principal
) -> None:
    clock = FakeClock()
    policy = LimitPolicy(tokens_per_day=1_000, tokens_per_month=2_000)
    before = admission(stores[0], policy, UNLIMITED, clock)
    await before.settle(await before.admit(principal, "m", 100), 900)
    after_restart = admission(stores[1], policy, UNLIMITED, clock)
    with pytest.raises(LimitExceeded) as refused:
        await after_restart.admit(principal, "m", 101)
    assert refused.value.limit_name == "key.tokens_per_day"
    await after_restart.seed_budgets([BudgetUsage("key", principal.key_id, 950, 950)])
    with pytest.raises(LimitExceeded):
        await after_restart.admit(principal, "m", 51)
    await after_restart.admit(principal, "m", 50)


async def test_three_gateways_admit_exactly_the_limit(
    stores: list[RedisStore], principal: Principal
) -> None:
    """2,000 concurrent requests for a 600/min key through three gateways: 600 pass."""
    policy = LimitPolicy(requests_per_minute=600, max_concurrent=1_000)
    gates = [
        LimitAdmission(store, lambda _p: (policy, UNLIMITED), clock=time.time) for store in stores
    ]

    async def one(i: int) -> str:
        gate = gates[i % 3]
        try:
            ticket = await gate.admit(principal, "m", 10)
        except LimitExceeded as refused:
            return refused.limit_name
        await gate.settle(ticket, 10)
        return "admitted"

    results = await asyncio.gather(*(one(i) for i in range(2_000)))
    assert results.count("admitted") == 600
    assert results.count("key.requests_per_minute") == 1_400


@pytest.mark.parametrize("seed", range(3))
async def test_concurrent_admit_and_settle_never_overshoot_a_budget(
    stores: list[RedisStore], principal: Principal, seed: int
) -> None:
    """Three gateways, admits and settles interleaved at random against small token
    budgets: what admitted requests spend never exceeds a budget by more than one
    reservation, and the counters end exactly at what was spent."""
    rng = random.Random(seed)
    largest, day = 400, 4_000
    key = LimitPolicy(tokens_per_minute=10_000, tokens_per_day=5_000, tokens_per_month=9_000)
    project = LimitPolicy(tokens_per_day=day, max_concurrent=24)
    clock = FakeClock()
    gates = [admission(store, key, project, clock) for store in stores]
    spent: list[int] = []

    async def one(i: int) -> None:
        gate = gates[i % 3]
        reserved = rng.randint(1, largest)
        actual = rng.choice([0, reserved, rng.randint(0, reserved)])
        await asyncio.sleep(rng.random() * 0.01)
        try:
            ticket = await gate.admit(principal, "m", reserved)
        except LimitExceeded:
            return
        await asyncio.sleep(rng.random() * 0.02)
        spent.append(actual)
        await gate.settle(ticket, actual)

    for _ in range(6):  # rounds: the next round's admits rely on exact settlements
        await asyncio.gather(*(one(i) for i in range(100)))
    total = sum(spent)
    assert day - largest < total <= day + largest
    rest = day - total
    if rest > 0:
        ticket = await gates[0].admit(principal, "m", rest)
        await gates[1].settle(ticket, rest)
    with pytest.raises(LimitExceeded) as refused:
        await gates[2].admit(principal, "m", 1)
    assert refused.value.limit_name == "project.tokens_per_day"
