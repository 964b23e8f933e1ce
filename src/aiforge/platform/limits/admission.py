"""``LimitAdmission``: the gateway's :class:`~aiforge.gateway.access.Admission` with real limits.

Each request is checked against its key's and its project's :class:`LimitPolicy` in one
atomic store call (see :mod:`.plan` for the charges, :mod:`.store` for the seam). Policies
come from a ``limits_for(principal)`` callable that answers from memory (the tenancy
layer's key cache). Concurrency slots carry a lease that this class renews while the
request is in flight, so a crashed gateway leaks its slots for one lease at most.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from aiforge.platform.limits.plan import (
    ChargeShape,
    Reservation,
    Scope,
    Subject,
    budget_key,
    explain_refusal,
    plan_reservation,
    plan_settlement,
)
from aiforge.platform.limits.policy import LimitPolicy
from aiforge.platform.limits.store import Store
from aiforge.platform.limits.windows import day_period, month_period
from aiforge.types import LimitExceeded, Principal, Ticket

LimitsProvider = Callable[[Principal], tuple[LimitPolicy, LimitPolicy]]
"""``limits_for(principal) -> (key_policy, project_policy)``; must not do I/O."""

Clock = Callable[[], float]

_STATE_KEY = "limits"
_SHAPES_KEPT = 4_096
"""Charge shapes cached (one per key in use); the oldest goes first beyond this."""


@dataclass(frozen=True, slots=True)
class BudgetUsage:
    """Tokens a key or project already spent this day and month (re-seeding after restart)."""

    scope: Scope
    subject_id: str
    day_tokens: int
    month_tokens: int


class LimitAdmission:
    """Admission enforcing rate limits, concurrency and token budgets through a Store."""

    def __init__(
        self,
        store: Store,
        limits_for: LimitsProvider,
        *,
        clock: Clock = time.time,
        lease_s: float = 60.0,
    ) -> None:
        self._store = store
        self._limits_for = limits_for
        self._clock = clock
        self._lease_s = lease_s
        self._in_flight: dict[str, tuple[str, ...]] = {}
        self._renewal: asyncio.Task[None] | None = None
        # Slot ids must be unique across gateways; a random prefix and a counter are cheap.
        self._slot_prefix = f"{uuid.uuid4().hex[:12]}-"
        self._slot_numbers = itertools.count()
        self._shapes: dict[tuple[str, str], _CachedShape] = {}

    @property
    def store(self) -> Store:
        return self._store

    async def admit(self, principal: Principal, model: str, estimated_tokens: int) -> Ticket:
        """Reserve every limit for this request or raise LimitExceeded (changing nothing)."""
        ticket = Ticket(principal=principal, model=model, reserved_tokens=estimated_tokens)
        key_policy, project_policy = self._limits_for(principal)
        shape = self._shape_for(principal, key_policy, project_policy)
        if shape.unlimited:
            return ticket
        plan, reservation = plan_reservation(
            shape,
            now=self._clock(),
            estimated_tokens=estimated_tokens,
            slot_id=f"{self._slot_prefix}{next(self._slot_numbers)}",
            lease_s=self._lease_s,
        )
        refusal = await self._store.reserve(plan)
        if refusal is not None:
            reason = explain_refusal(shape, plan, refusal)
            raise LimitExceeded(
                reason.limit_name, reason.message, retry_after_s=reason.retry_after_s
            )
        ticket.state[_STATE_KEY] = reservation
        if reservation.slots:
            self._in_flight[reservation.slot_id] = reservation.slots
            self._ensure_renewal()
        return ticket

    def _shape_for(
        self, principal: Principal, key_policy: LimitPolicy, project_policy: LimitPolicy
    ) -> ChargeShape:
        """The cached charges of this key and project, rebuilt when a policy changed."""
        pair = (principal.key_id, principal.project_id)
        cached = self._shapes.get(pair)
        if cached is not None and cached.serves(principal, key_policy, project_policy):
            return cached.shape
        display = principal.key_prefix or principal.key_id
        shape = ChargeShape(
            (
                Subject("key", principal.key_id, key_policy, f"key {display}"),
                Subject("project", principal.project_id, project_policy, "its project"),
            )
        )
        if cached is None and len(self._shapes) >= _SHAPES_KEPT:
            del self._shapes[next(iter(self._shapes))]
        self._shapes[pair] = _CachedShape(shape, key_policy, project_policy, principal.key_prefix)
        return shape

    async def settle(self, ticket: Ticket, actual_tokens: int) -> None:
        """Correct the token reservation to ``actual_tokens`` and free the slot. Idempotent."""
        reservation = ticket.state.pop(_STATE_KEY, None)
        if not isinstance(reservation, Reservation):
            return
        self._in_flight.pop(reservation.slot_id, None)
        plan = plan_settlement(reservation, actual_tokens)
        if plan.window_keys or plan.budget_keys or plan.slot_keys:
            await self._store.settle(plan)

    async def seed_budgets(self, usages: Iterable[BudgetUsage]) -> None:
        """Raise this day's and month's budget counters to what the usage ledger says.

        Needed for a store that forgets on restart (:class:`MemoryStore`); harmless otherwise.
        """
        now = self._clock()
        day, month = day_period(now), month_period(now)
        for usage in usages:
            for period, used in ((day, usage.day_tokens), (month, usage.month_tokens)):
                if used > 0:
                    key = budget_key(usage.scope, usage.subject_id, period)
                    await self._store.seed_budget(key, used, period.ends_at + 3_600.0)

    async def renew_leases(self) -> None:
        """Extend the lease of every slot this gateway holds (called periodically)."""
        lease_until = self._clock() + self._lease_s
        for slot_id, keys in list(self._in_flight.items()):
            await self._store.renew(keys, slot_id, lease_until)

    def _ensure_renewal(self) -> None:
        if self._renewal is None or self._renewal.done():
            self._renewal = asyncio.get_running_loop().create_task(self._renew_forever())

    async def _renew_forever(self) -> None:
        while self._in_flight:
            await asyncio.sleep(self._lease_s / 3)
            # A failed renewal must not kill the loop; the next one retries.
            with contextlib.suppress(Exception):
                await self.renew_leases()

    async def aclose(self) -> None:
        """Stop lease renewal and close the store."""
        if self._renewal is not None:
            self._renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewal
        await self._store.aclose()


@dataclass(slots=True)
class _CachedShape:
    shape: ChargeShape
    key_policy: LimitPolicy
    project_policy: LimitPolicy
    key_prefix: str

    def serves(self, principal: Principal, key: LimitPolicy, project: LimitPolicy) -> bool:
        """Same policies (the same objects while the key cache holds, else equal values)."""
        return (
            (self.key_policy is key or self.key_policy == key)
            and (self.project_policy is project or self.project_policy == project)
            and self.key_prefix == principal.key_prefix
        )
