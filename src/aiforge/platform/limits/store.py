"""The counter store seam: what a request reserves, checked and applied atomically.

Admission turns a request into a :class:`ReservationPlan` (every window, budget and
concurrency slot of the key *and* its project) and hands it to a :class:`Store` in one call.
The store checks everything and either applies all of it or nothing, so concurrent
gateways sharing one store can never overshoot a limit. :class:`MemoryStore` serves one
gateway; :class:`aiforge.platform.limits.redis_store.RedisStore` serves many.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from aiforge.platform.limits.windows import (
    BUCKETS_PER_WINDOW,
    fits,
    oldest_live_bucket,
    window_usage,
)


@dataclass(frozen=True, slots=True)
class WindowCharge:
    """Charge ``cost`` to a sliding window (requests or tokens per minute)."""

    key: str
    limit: int
    cost: int


@dataclass(frozen=True, slots=True)
class BudgetCharge:
    """Charge ``cost`` to a period counter (tokens per day or month)."""

    key: str
    limit: int
    cost: int
    expires_at: float
    """When the counter may be forgotten (a while after its period ends)."""


@dataclass(frozen=True, slots=True)
class SlotClaim:
    """Take one concurrency slot of ``limit``; held until released or the lease runs out."""

    key: str
    limit: int


@dataclass(frozen=True, slots=True)
class ReservationPlan:
    """Everything one request needs, for one atomic check-and-reserve."""

    now: float
    now_index: int
    """The current window bucket."""
    windows: tuple[WindowCharge, ...]
    budgets: tuple[BudgetCharge, ...]
    slots: tuple[SlotClaim, ...]
    slot_id: str
    lease_until: float


@dataclass(frozen=True, slots=True)
class Refusal:
    """Which charge did not fit, with what the store saw (for the retry-after arithmetic)."""

    kind: str
    """``window``, ``budget`` or ``slot``."""
    index: int
    """Position of the refused charge within its tuple of the plan."""
    used: int
    buckets: dict[int, int]
    """For a window: its live bucket counts."""
    next_expiry: float | None = None
    """For a slot: when the earliest lease runs out."""


@dataclass(frozen=True, slots=True)
class SettlePlan:
    """Replace reservations by real counts and release slots, in one call."""

    window_deltas: tuple[tuple[str, int, int], ...]
    """``(key, bucket_index, delta)``; skipped when the bucket has already expired."""
    budget_deltas: tuple[tuple[str, int], ...]
    slot_keys: tuple[str, ...]
    slot_id: str


class Store(Protocol):
    """Atomic counters for admission."""

    persistent: bool
    """True when counters survive a gateway restart (day/month budgets need no re-seeding)."""

    async def reserve(self, plan: ReservationPlan) -> Refusal | None:
        """Apply every charge of ``plan`` if all fit; otherwise change nothing and say why."""

    async def settle(self, plan: SettlePlan) -> None:
        """Apply token corrections and release the slots."""

    async def renew(self, slot_keys: tuple[str, ...], slot_id: str, lease_until: float) -> None:
        """Extend a held slot's lease (an in-flight request is still alive)."""

    async def seed_budget(self, key: str, used: int, expires_at: float) -> None:
        """Raise a budget counter to at least ``used`` (re-seeding after a restart)."""

    async def aclose(self) -> None:
        """Release connections."""


class MemoryStore:
    """Counters in this process. Atomic because the event loop runs one call at a time."""

    persistent = False

    def __init__(self) -> None:
        self._windows: dict[str, dict[int, int]] = {}
        self._budgets: dict[str, tuple[int, float]] = {}
        self._slots: dict[str, dict[str, float]] = {}

    async def reserve(self, plan: ReservationPlan) -> Refusal | None:
        refusal = self._check(plan)
        if refusal is None:
            self._apply(plan)
        return refusal

    def _check(self, plan: ReservationPlan) -> Refusal | None:
        oldest = oldest_live_bucket(plan.now_index, BUCKETS_PER_WINDOW)
        for position, window in enumerate(plan.windows):
            buckets = self._windows.get(window.key, {})
            for stale in [i for i in buckets if i < oldest]:
                del buckets[stale]
            used = window_usage(buckets, plan.now_index)
            if not fits(used, window.cost, window.limit):
                return Refusal("window", position, used, dict(buckets))
        for position, budget in enumerate(plan.budgets):
            used = self._budget_used(budget.key, plan.now)
            if not fits(used, budget.cost, budget.limit):
                return Refusal("budget", position, used, {})
        for position, claim in enumerate(plan.slots):
            leases = self._live_leases(claim.key, plan.now)
            if len(leases) >= claim.limit:
                return Refusal(
                    "slot", position, len(leases), {}, min(leases.values(), default=None)
                )
        return None

    def _apply(self, plan: ReservationPlan) -> None:
        for window in plan.windows:
            buckets = self._windows.setdefault(window.key, {})
            buckets[plan.now_index] = buckets.get(plan.now_index, 0) + window.cost
        for budget in plan.budgets:
            used = self._budget_used(budget.key, plan.now)
            self._budgets[budget.key] = (used + budget.cost, budget.expires_at)
        for claim in plan.slots:
            self._slots.setdefault(claim.key, {})[plan.slot_id] = plan.lease_until

    def _budget_used(self, key: str, now: float) -> int:
        used, expires_at = self._budgets.get(key, (0, now + 1.0))
        if expires_at <= now:
            del self._budgets[key]
            return 0
        return used

    def _live_leases(self, key: str, now: float) -> dict[str, float]:
        leases = self._slots.setdefault(key, {})
        for slot_id in [s for s, until in leases.items() if until <= now]:
            del leases[slot_id]
        return leases

    async def settle(self, plan: SettlePlan) -> None:
        for key, index, delta in plan.window_deltas:
            buckets = self._windows.get(key)
            if buckets is not None and index in buckets:
                buckets[index] = max(0, buckets[index] + delta)
        for key, delta in plan.budget_deltas:
            if key in self._budgets:
                used, expires_at = self._budgets[key]
                self._budgets[key] = (max(0, used + delta), expires_at)
        for key in plan.slot_keys:
            self._slots.get(key, {}).pop(plan.slot_id, None)

    async def renew(self, slot_keys: tuple[str, ...], slot_id: str, lease_until: float) -> None:
        for key in slot_keys:
            leases = self._slots.get(key, {})
            if slot_id in leases:
                leases[slot_id] = lease_until

    async def seed_budget(self, key: str, used: int, expires_at: float) -> None:
        current, _ = self._budgets.get(key, (0, expires_at))
        self._budgets[key] = (max(current, used), expires_at)

    async def aclose(self) -> None:
        return None
