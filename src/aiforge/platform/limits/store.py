"""The counter store seam: what a request reserves, checked and applied atomically.

Admission turns a request into a :class:`ReservationPlan` (every window, budget and
concurrency slot of the key *and* its project) and hands it to a :class:`Store` in one call.
The store checks everything and either applies all of it or nothing, so concurrent
gateways sharing one store can never overshoot a limit. :class:`MemoryStore` serves one
gateway; :class:`aiforge.platform.limits.redis_store.RedisStore` serves many.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from aiforge.platform.limits.windows import BUCKETS_PER_WINDOW, fits

# The charge types are tuples: a request's plan is built on every request (the accepted path),
# and a tuple costs a fraction of a frozen dataclass to make. Everything but the request's
# own figures (its clock reading, token cost and slot id) is built once per key and project
# and shared by their plans (see :class:`aiforge.platform.limits.plan.ChargeShape`).


class WindowCharge(NamedTuple):
    """A sliding window (requests or tokens per minute) the request is charged to."""

    key: str
    limit: int
    per_token: bool
    """Charged the request's tokens (:attr:`ReservationPlan.tokens`); else one request."""


class BudgetCharge(NamedTuple):
    """A period counter (tokens per day or month), charged the request's tokens."""

    key: str
    limit: int
    expires_at: float
    """When the counter may be forgotten (a while after its period ends)."""


class SlotClaim(NamedTuple):
    """Take one concurrency slot of ``limit``; held until released or the lease runs out."""

    key: str
    limit: int


class ReservationPlan(NamedTuple):
    """Everything one request needs, for one atomic check-and-reserve."""

    now: float
    now_index: int
    """The current window bucket."""
    tokens: int
    """What the request may use (>= 0): the cost of every token window and budget."""
    windows: tuple[WindowCharge, ...]
    budgets: tuple[BudgetCharge, ...]
    slots: tuple[SlotClaim, ...]
    slot_id: str
    lease_until: float

    def window_cost(self, window: WindowCharge) -> int:
        """What ``window`` is charged: the tokens, or one request."""
        return self.tokens if window.per_token else 1


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


class SettlePlan(NamedTuple):
    """Replace reservations by real counts and release slots, in one call."""

    window_keys: tuple[str, ...]
    """Token windows whose bucket ``now_index`` gets ``delta`` (skipped once it expired)."""
    budget_keys: tuple[str, ...]
    """Budget counters that get ``delta`` (skipped once they expired)."""
    now_index: int
    delta: int
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


class _Window:
    """One sliding window's buckets and their running total.

    Invariant: every bucket held has an index >= ``floor``, and ``total`` is their sum. A
    read at ``now_index`` drops the buckets that no longer count only when the window's
    oldest live bucket moved past ``floor`` (once a bucket width), so it costs no scan.
    """

    __slots__ = ("buckets", "floor", "total")

    def __init__(self, floor: int) -> None:
        self.buckets: dict[int, int] = {}
        self.floor = floor
        self.total = 0

    def usage(self, now_index: int) -> int:
        """What the window holds at ``now_index`` (buckets newer than it count too)."""
        oldest = now_index - BUCKETS_PER_WINDOW
        if oldest > self.floor:
            buckets = self.buckets
            for stale in [i for i in buckets if i < oldest]:
                self.total -= buckets.pop(stale)
            self.floor = oldest
        return self.total

    def add(self, index: int, cost: int) -> None:
        self.buckets[index] = self.buckets.get(index, 0) + cost
        self.total += cost
        if index < self.floor:  # an earlier clock reading: keep the invariant
            self.floor = index

    def correct(self, index: int, delta: int) -> None:
        """Add ``delta`` to a bucket still held (never below zero); an expired one stays gone."""
        count = self.buckets.get(index)
        if count is not None:
            corrected = max(0, count + delta)
            self.buckets[index] = corrected
            self.total += corrected - count


class _Slots:
    """The leases of one concurrency limit; expired ones are dropped when one may be due."""

    __slots__ = ("earliest", "leases")

    def __init__(self) -> None:
        self.leases: dict[str, float] = {}
        self.earliest = math.inf
        """No lease ends before this (renewals and releases may leave it early: harmless)."""

    def live(self, now: float) -> dict[str, float]:
        if now >= self.earliest:
            leases = self.leases
            for slot_id in [s for s, until in leases.items() if until <= now]:
                del leases[slot_id]
            self.earliest = min(leases.values(), default=math.inf)
        return self.leases

    def hold(self, slot_id: str, until: float) -> None:
        self.leases[slot_id] = until
        if until < self.earliest:
            self.earliest = until


class MemoryStore:
    """Counters in this process. Atomic because the event loop runs one call at a time."""

    persistent = False

    def __init__(self) -> None:
        self._windows: dict[str, _Window] = {}
        self._budgets: dict[str, tuple[int, float]] = {}
        self._slots: dict[str, _Slots] = {}

    async def reserve(self, plan: ReservationPlan) -> Refusal | None:
        refusal = self._check(plan)
        if refusal is None:
            self._apply(plan)
        return refusal

    def _check(self, plan: ReservationPlan) -> Refusal | None:
        now, now_index, tokens = plan.now, plan.now_index, plan.tokens
        for position, charge in enumerate(plan.windows):
            window = self._windows.get(charge.key)
            used = 0 if window is None else window.usage(now_index)
            if not fits(used, tokens if charge.per_token else 1, charge.limit):
                return Refusal("window", position, used, dict(window.buckets) if window else {})
        for position, budget in enumerate(plan.budgets):
            used = self._budget_used(budget.key, now)
            if not fits(used, tokens, budget.limit):
                return Refusal("budget", position, used, {})
        for position, claim in enumerate(plan.slots):
            slots = self._slots.get(claim.key)
            leases = {} if slots is None else slots.live(now)
            if len(leases) >= claim.limit:
                return Refusal(
                    "slot", position, len(leases), {}, min(leases.values(), default=None)
                )
        return None

    def _apply(self, plan: ReservationPlan) -> None:
        now_index, tokens = plan.now_index, plan.tokens
        for charge in plan.windows:
            window = self._windows.get(charge.key)
            if window is None:
                window = self._windows[charge.key] = _Window(now_index - BUCKETS_PER_WINDOW)
            window.add(now_index, tokens if charge.per_token else 1)
        for budget in plan.budgets:
            used = self._budget_used(budget.key, plan.now)
            self._budgets[budget.key] = (used + tokens, budget.expires_at)
        for claim in plan.slots:
            slots = self._slots.get(claim.key)
            if slots is None:
                slots = self._slots[claim.key] = _Slots()
            slots.hold(plan.slot_id, plan.lease_until)

    def _budget_used(self, key: str, now: float) -> int:
        counter = self._budgets.get(key)
        if counter is None:
            return 0
        if counter[1] <= now:
            del self._budgets[key]
            return 0
        return counter[0]

    async def settle(self, plan: SettlePlan) -> None:
        delta = plan.delta
        if delta:
            for key in plan.window_keys:
                window = self._windows.get(key)
                if window is not None:
                    window.correct(plan.now_index, delta)
            for key in plan.budget_keys:
                counter = self._budgets.get(key)
                if counter is not None:
                    self._budgets[key] = (max(0, counter[0] + delta), counter[1])
        for key in plan.slot_keys:
            slots = self._slots.get(key)
            if slots is not None:
                slots.leases.pop(plan.slot_id, None)

    async def renew(self, slot_keys: tuple[str, ...], slot_id: str, lease_until: float) -> None:
        for key in slot_keys:
            slots = self._slots.get(key)
            if slots is not None and slot_id in slots.leases:
                slots.hold(slot_id, lease_until)

    async def seed_budget(self, key: str, used: int, expires_at: float) -> None:
        current, _ = self._budgets.get(key, (0, expires_at))
        self._budgets[key] = (max(current, used), expires_at)

    async def aclose(self) -> None:
        return None
