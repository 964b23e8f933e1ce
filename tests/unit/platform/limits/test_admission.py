"""LimitAdmission over the MemoryStore, with a fake clock: every limit, both scopes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from aiforge.platform.limits import BudgetUsage, LimitAdmission, LimitPolicy, MemoryStore
from aiforge.platform.limits.policy import UNLIMITED
from aiforge.platform.limits.store import Refusal, ReservationPlan
from aiforge.types import LimitExceeded, Principal

PRINCIPAL = Principal(
    key_id="k1", project_id="p1", organization_id="o1", role="member", key_prefix="sk-abc"
)
OTHER_KEY = Principal(key_id="k2", project_id="p1", organization_id="o1", role="member")


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make(
    key: LimitPolicy, project: LimitPolicy = UNLIMITED, *, start: float = 10_000.5
) -> tuple[LimitAdmission, FakeClock]:
    clock = FakeClock(start)
    admission = LimitAdmission(MemoryStore(), lambda _p: (key, project), clock=clock)
    return admission, clock


async def test_requests_per_minute_refuses_the_next_and_says_when() -> None:
    admission, clock = make(LimitPolicy(requests_per_minute=3))
    for _ in range(3):
        await admission.admit(PRINCIPAL, "m", 10)
    with pytest.raises(LimitExceeded) as refused:
        await admission.admit(PRINCIPAL, "m", 10)
    assert refused.value.limit_name == "key.requests_per_minute"
    assert "sk-abc" in refused.value.message
    assert refused.value.retry_after_s == pytest.approx(61.0 - 0.5)
    clock.now += refused.value.retry_after_s
    await admission.admit(PRINCIPAL, "m", 10)


async def test_a_refusal_changes_nothing() -> None:
    # The key's token window has room, the project's slot does not: nothing may be charged.
    admission, _ = make(LimitPolicy(tokens_per_minute=100), LimitPolicy(max_concurrent=1))
    first = await admission.admit(PRINCIPAL, "m", 60)
    with pytest.raises(LimitExceeded) as refused:
        await admission.admit(PRINCIPAL, "m", 30)
    assert refused.value.limit_name == "project.max_concurrent"
    await admission.settle(first, 60)
    # 60 + 40 fits only if the refused request's 30 tokens were never reserved.
    await admission.admit(PRINCIPAL, "m", 40)


async def test_project_limit_is_shared_by_its_keys() -> None:
    admission, _ = make(UNLIMITED, LimitPolicy(requests_per_minute=2))
    await admission.admit(PRINCIPAL, "m", 1)
    await admission.admit(OTHER_KEY, "m", 1)
    with pytest.raises(LimitExceeded):
        await admission.admit(OTHER_KEY, "m", 1)


async def test_tokens_per_minute_reserves_the_estimate_and_settles_the_real_count() -> None:
    admission, _ = make(LimitPolicy(tokens_per_minute=100))
    ticket = await admission.admit(PRINCIPAL, "m", 80)
    with pytest.raises(LimitExceeded) as refused:
        await admission.admit(PRINCIPAL, "m", 30)
    assert refused.value.limit_name == "key.tokens_per_minute"
    await admission.settle(ticket, 50)  # the request used less than estimated
    await admission.admit(PRINCIPAL, "m", 50)
    with pytest.raises(LimitExceeded):
        await admission.admit(PRINCIPAL, "m", 1)


async def test_a_request_larger_than_the_limit_is_refused_as_too_large() -> None:
    admission, _ = make(LimitPolicy(tokens_per_minute=100))
    with pytest.raises(LimitExceeded) as refused:
        await admission.admit(PRINCIPAL, "m", 101)
    assert "too large" in refused.value.message


async def test_concurrency_slot_is_freed_by_settle_and_settle_is_idempotent() -> None:
    admission, _ = make(LimitPolicy(max_concurrent=1))
    ticket = await admission.admit(PRINCIPAL, "m", 1)
    with pytest.raises(LimitExceeded) as refused:
        await admission.admit(PRINCIPAL, "m", 1)
    assert refused.value.limit_name == "key.max_concurrent"
    await admission.settle(ticket, 1)
    await admission.settle(ticket, 1)
    second = await admission.admit(PRINCIPAL, "m", 1)
    await admission.settle(second, 1)
    await admission.aclose()


async def test_a_crashed_gateways_slot_expires_with_its_lease() -> None:
    clock = FakeClock(100.0)
    store = MemoryStore()
    policy = LimitPolicy(max_concurrent=1)
    crashed = LimitAdmission(store, lambda _p: (policy, UNLIMITED), clock=clock, lease_s=30)
    await crashed.admit(PRINCIPAL, "m", 1)  # never settled: the gateway died
    survivor = LimitAdmission(store, lambda _p: (policy, UNLIMITED), clock=clock, lease_s=30)
    with pytest.raises(LimitExceeded):
        await survivor.admit(PRINCIPAL, "m", 1)
    clock.now += 30.001
    await survivor.admit(PRINCIPAL, "m", 1)
    await crashed.aclose()
    await survivor.aclose()


async def test_a_live_request_keeps_its_slot_by_renewing_the_lease() -> None:
    clock = FakeClock(100.0)
    policy = LimitPolicy(max_concurrent=1)
    admission = LimitAdmission(
        MemoryStore(), lambda _p: (policy, UNLIMITED), clock=clock, lease_s=30
    )
    await admission.admit(PRINCIPAL, "m", 1)
    clock.now += 20
    await admission.renew_leases()
    clock.now += 20
    with pytest.raises(LimitExceeded):
        await admission.admit(PRINCIPAL, "m", 1)
    await admission.aclose()


async def test_daily_budget_resets_at_utc_midnight() -> None:
    start = datetime(2025, 3, 1, 23, 0, tzinfo=UTC).timestamp()
    admission, clock = make(LimitPolicy(tokens_per_day=100), start=start)
    ticket = await admission.admit(PRINCIPAL, "m", 60)
    await admission.settle(ticket, 100)
    with pytest.raises(LimitExceeded) as refused:
        await admission.admit(PRINCIPAL, "m", 0)
    assert refused.value.limit_name == "key.tokens_per_day"
    assert refused.value.retry_after_s == pytest.approx(3_600.0)
    clock.now += 3_600
    await admission.admit(PRINCIPAL, "m", 100)


async def test_monthly_budget_counts_across_days() -> None:
    start = datetime(2025, 3, 1, 12, tzinfo=UTC).timestamp()
    admission, clock = make(UNLIMITED, LimitPolicy(tokens_per_month=150), start=start)
    await admission.settle(await admission.admit(PRINCIPAL, "m", 100), 100)
    clock.now += 86_400 * 3
    with pytest.raises(LimitExceeded) as refused:
        await admission.admit(PRINCIPAL, "m", 51)
    assert refused.value.limit_name == "project.tokens_per_month"
    await admission.admit(PRINCIPAL, "m", 50)


async def test_budgets_are_reseeded_after_a_restart() -> None:
    admission, _ = make(LimitPolicy(tokens_per_day=1_000), LimitPolicy(tokens_per_month=5_000))
    await admission.seed_budgets(
        [
            BudgetUsage("key", "k1", day_tokens=990, month_tokens=990),
            BudgetUsage("project", "p1", day_tokens=990, month_tokens=4_995),
        ]
    )
    with pytest.raises(LimitExceeded) as refused:
        await admission.admit(PRINCIPAL, "m", 6)
    assert refused.value.limit_name == "project.tokens_per_month"
    await admission.admit(PRINCIPAL, "m", 5)


async def test_unlimited_policies_never_touch_the_store() -> None:
    class ExplodingStore(MemoryStore):
        async def reserve(self, plan: ReservationPlan) -> Refusal | None:
            raise AssertionError("store used for an unlimited key")

    admission = LimitAdmission(ExplodingStore(), lambda _p: (UNLIMITED, UNLIMITED))
    ticket = await admission.admit(PRINCIPAL, "m", 10)
    await admission.settle(ticket, 10)


async def test_a_changed_policy_applies_to_the_next_request() -> None:
    # Admission keeps each key's charges between requests; a new policy must replace them.
    policies = {"key": LimitPolicy(requests_per_minute=1)}
    admission = LimitAdmission(MemoryStore(), lambda _p: (policies["key"], UNLIMITED))
    await admission.admit(PRINCIPAL, "m", 1)
    with pytest.raises(LimitExceeded):
        await admission.admit(PRINCIPAL, "m", 1)
    policies["key"] = LimitPolicy(requests_per_minute=2)
    await admission.admit(PRINCIPAL, "m", 1)
    policies["key"] = LimitPolicy(requests_per_minute=2)  # equal, not the same object
    with pytest.raises(LimitExceeded) as refused:
        await admission.admit(PRINCIPAL, "m", 1)
    assert "limit 2, used 2" in refused.value.message
    policies["key"] = UNLIMITED
    await admission.admit(PRINCIPAL, "m", 1)


async def test_counters_outlive_the_cached_charges_of_many_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("aiforge.platform.limits.admission._SHAPES_KEPT", 2)
    admission, _ = make(LimitPolicy(requests_per_minute=1))
    keys = [
        Principal(key_id=f"k{i}", project_id="p1", organization_id="o1", role="member")
        for i in range(5)
    ]
    for principal in keys:
        await admission.admit(principal, "m", 1)
    for principal in keys:  # the first keys' cached charges were dropped, not their counts
        with pytest.raises(LimitExceeded) as refused:
            await admission.admit(principal, "m", 1)
        assert f"key {principal.key_id}" in refused.value.message


async def test_a_clock_going_back_counts_every_live_bucket_once() -> None:
    admission, clock = make(LimitPolicy(requests_per_minute=2), start=300.5)
    await admission.admit(PRINCIPAL, "m", 1)
    clock.now = 200.5  # earlier than the window's oldest live bucket at 300.5
    await admission.admit(PRINCIPAL, "m", 1)
    clock.now = 230.5  # both buckets (200 and 300) are live here
    with pytest.raises(LimitExceeded) as refused:
        await admission.admit(PRINCIPAL, "m", 1)
    assert "used 2" in refused.value.message
    clock.now = 261.5  # bucket 200 has left the window; bucket 300 still counts
    await admission.admit(PRINCIPAL, "m", 1)
    with pytest.raises(LimitExceeded):
        await admission.admit(PRINCIPAL, "m", 1)


async def test_settle_corrects_the_window_total_and_never_goes_below_zero() -> None:
    admission, clock = make(LimitPolicy(tokens_per_minute=100))
    first = await admission.admit(PRINCIPAL, "m", 50)
    second = await admission.admit(PRINCIPAL, "m", 50)
    await admission.settle(first, 0)
    await admission.settle(second, 0)
    ticket = await admission.admit(PRINCIPAL, "m", 100)  # exactly the limit: nothing left over
    with pytest.raises(LimitExceeded):
        await admission.admit(PRINCIPAL, "m", 1)
    clock.now += 61
    await admission.settle(ticket, 10)  # its bucket expired: the correction must not revive it
    await admission.admit(PRINCIPAL, "m", 100)


async def test_each_expired_lease_frees_its_slot_when_it_runs_out() -> None:
    clock = FakeClock(100.0)
    store = MemoryStore()
    policy = LimitPolicy(max_concurrent=2)
    crashed = LimitAdmission(store, lambda _p: (policy, UNLIMITED), clock=clock, lease_s=30)
    alive = LimitAdmission(store, lambda _p: (policy, UNLIMITED), clock=clock, lease_s=30)
    await crashed.admit(PRINCIPAL, "m", 1)  # never settled: lease until 130
    clock.now = 105.0
    await crashed.admit(PRINCIPAL, "m", 1)  # lease until 135
    clock.now = 129.0
    with pytest.raises(LimitExceeded):
        await alive.admit(PRINCIPAL, "m", 1)
    clock.now = 130.0
    await alive.admit(PRINCIPAL, "m", 1)  # lease until 160
    clock.now = 134.0
    with pytest.raises(LimitExceeded):
        await alive.admit(PRINCIPAL, "m", 1)
    clock.now = 135.0
    await alive.admit(PRINCIPAL, "m", 1)
    await crashed.aclose()
    await alive.aclose()


async def test_a_lease_renewed_by_an_earlier_clock_ends_at_the_renewed_time() -> None:
    clock = FakeClock(100.0)
    policy = LimitPolicy(max_concurrent=1)
    admission = LimitAdmission(
        MemoryStore(), lambda _p: (policy, UNLIMITED), clock=clock, lease_s=30
    )
    await admission.admit(PRINCIPAL, "m", 1)  # lease until 130
    clock.now = 50.0  # the wall clock was stepped back
    await admission.renew_leases()  # lease until 80
    clock.now = 80.0
    await admission.admit(PRINCIPAL, "m", 1)
    await admission.aclose()
