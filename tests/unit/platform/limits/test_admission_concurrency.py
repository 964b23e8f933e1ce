"""Many concurrent requests against small budgets: admit and settle interleave at random,
and what the admitted requests spend never exceeds a budget by more than one reservation.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from aiforge.platform.limits import LimitAdmission, LimitPolicy, MemoryStore
from aiforge.types import LimitExceeded, Principal

PRINCIPAL = Principal(key_id="k1", project_id="p1", organization_id="o1", role="member")
KEY = LimitPolicy(tokens_per_minute=2_000, tokens_per_day=5_000, tokens_per_month=9_000)
PROJECT = LimitPolicy(tokens_per_day=4_000, max_concurrent=24)
LARGEST = 400


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def _request(
    admission: LimitAdmission, clock: FakeClock, rng: random.Random, spent: list[int]
) -> None:
    reserved = rng.randint(1, LARGEST)
    actual = rng.choice([0, reserved, rng.randint(0, reserved)])
    await asyncio.sleep(rng.random() * 0.01)
    try:
        ticket = await admission.admit(PRINCIPAL, "m", reserved)
    except LimitExceeded:
        return
    await asyncio.sleep(rng.random() * 0.02)
    clock.now += rng.random() * 0.5  # the window slides while requests run
    spent.append(actual)
    await admission.settle(ticket, actual)
    await admission.settle(ticket, actual)  # a second settle changes nothing


@pytest.mark.parametrize("seed", range(5))
async def test_concurrent_requests_never_overshoot_a_budget(seed: int) -> None:
    rng = random.Random(seed)
    clock = FakeClock(1_000_000.5)
    admission = LimitAdmission(MemoryStore(), lambda _p: (KEY, PROJECT), clock=clock)
    spent: list[int] = []
    for _ in range(8):  # rounds: settled tokens must be exact for the next round's admits
        await asyncio.gather(*(_request(admission, clock, rng, spent) for _ in range(100)))
        clock.now += 30
    total = sum(spent)
    assert total <= min(PROJECT.tokens_per_day or 0, KEY.tokens_per_day or 0) + LARGEST
    assert total > 3_000, "the budget was actually spent, not refused wholesale"
    # The counters hold exactly what was spent: the rest of the budget is still admitted.
    rest = min(PROJECT.tokens_per_day or 0, KEY.tokens_per_day or 0) - total
    clock.now += 61  # past the per-minute window
    if rest > 0:
        ticket = await admission.admit(PRINCIPAL, "m", rest)
        await admission.settle(ticket, rest)
    with pytest.raises(LimitExceeded):
        await admission.admit(PRINCIPAL, "m", 1)
