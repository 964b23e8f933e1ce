"""Turn a request and its two policies into one reservation plan, and a refusal into a 429.

Pure: the clock's reading, the slot id and the policies are passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from aiforge.platform.limits.policy import LimitPolicy
from aiforge.platform.limits.store import (
    BudgetCharge,
    Refusal,
    ReservationPlan,
    SettlePlan,
    SlotClaim,
    WindowCharge,
)
from aiforge.platform.limits.windows import (
    BudgetPeriod,
    bucket_index,
    budget_retry_after,
    day_period,
    month_period,
    window_retry_after,
)

Scope = Literal["key", "project"]

# Budget counters outlive their period a little, so a late settle still finds them.
_BUDGET_GRACE_S = 3_600.0
# A full slot usually frees when a request finishes, long before its lease runs out.
_SLOT_RETRY_S = 1.0


@dataclass(frozen=True, slots=True)
class Subject:
    """Who a limit applies to: a key or a project, with its policy."""

    scope: Scope
    subject_id: str
    policy: LimitPolicy
    display: str
    """How messages name it (a key's prefix, never the secret)."""


@dataclass(frozen=True, slots=True)
class LimitLabel:
    """What a charge of the plan stands for, to explain a refusal."""

    limit_name: str
    """E.g. ``key.requests_per_minute``."""
    subject: str
    limit: int
    cost: int
    unit: str
    period: BudgetPeriod | None = None

    @property
    def description(self) -> str:
        field = self.limit_name.split(".", 1)[1]
        return "concurrent requests" if field == "max_concurrent" else field.replace("_", " ")


@dataclass(frozen=True, slots=True)
class Reservation:
    """What a successful admit holds, kept on the ticket for settle and lease renewal."""

    now_index: int
    token_windows: tuple[str, ...]
    budgets: tuple[str, ...]
    slots: tuple[str, ...]
    slot_id: str
    reserved_tokens: int


@dataclass(frozen=True, slots=True)
class PlannedReservation:
    plan: ReservationPlan
    windows: tuple[LimitLabel, ...]
    budgets: tuple[LimitLabel, ...]
    slots: tuple[LimitLabel, ...]
    reservation: Reservation


def budget_key(scope: Scope, subject_id: str, period: BudgetPeriod) -> str:
    return f"{scope}:{subject_id}:{period.name}:{period.period_id}"


@dataclass(slots=True)
class _Charges:
    windows: list[tuple[WindowCharge, LimitLabel]]
    budgets: list[tuple[BudgetCharge, LimitLabel]]
    slots: list[tuple[SlotClaim, LimitLabel]]


def _label(
    s: Subject, field: str, limit: int, cost: int, unit: str, period: BudgetPeriod | None = None
) -> LimitLabel:
    return LimitLabel(f"{s.scope}.{field}", s.display, limit, cost, unit, period)


def _add_subject(
    charges: _Charges, s: Subject, tokens: int, periods: tuple[BudgetPeriod, BudgetPeriod]
) -> None:
    base, p = f"{s.scope}:{s.subject_id}", s.policy
    if p.requests_per_minute is not None:
        label = _label(s, "requests_per_minute", p.requests_per_minute, 1, "requests")
        charges.windows.append((WindowCharge(f"{base}:rpm", p.requests_per_minute, 1), label))
    if p.tokens_per_minute is not None:
        label = _label(s, "tokens_per_minute", p.tokens_per_minute, tokens, "tokens")
        charges.windows.append((WindowCharge(f"{base}:tpm", p.tokens_per_minute, tokens), label))
    for period, budget in zip(periods, (p.tokens_per_day, p.tokens_per_month), strict=True):
        if budget is not None:
            key = budget_key(s.scope, s.subject_id, period)
            label = _label(s, f"tokens_per_{period.name}", budget, tokens, "tokens", period)
            expires = period.ends_at + _BUDGET_GRACE_S
            charges.budgets.append((BudgetCharge(key, budget, tokens, expires), label))
    if p.max_concurrent is not None:
        label = _label(s, "max_concurrent", p.max_concurrent, 1, "requests")
        charges.slots.append((SlotClaim(f"{base}:slots", p.max_concurrent), label))


def plan_reservation(
    subjects: tuple[Subject, ...],
    *,
    now: float,
    estimated_tokens: int,
    slot_id: str,
    lease_s: float,
) -> PlannedReservation:
    """Every charge the request makes, for one atomic check-and-reserve."""
    tokens = max(0, estimated_tokens)
    charges = _Charges([], [], [])
    periods = (day_period(now), month_period(now))
    for subject in subjects:
        _add_subject(charges, subject, tokens, periods)
    plan = ReservationPlan(
        now=now,
        now_index=bucket_index(now),
        windows=tuple(c for c, _ in charges.windows),
        budgets=tuple(c for c, _ in charges.budgets),
        slots=tuple(c for c, _ in charges.slots),
        slot_id=slot_id,
        lease_until=now + lease_s,
    )
    reservation = Reservation(
        now_index=plan.now_index,
        token_windows=tuple(c.key for c in plan.windows if c.key.endswith(":tpm")),
        budgets=tuple(c.key for c in plan.budgets),
        slots=tuple(c.key for c in plan.slots),
        slot_id=slot_id,
        reserved_tokens=tokens,
    )
    return PlannedReservation(
        plan,
        tuple(label for _, label in charges.windows),
        tuple(label for _, label in charges.budgets),
        tuple(label for _, label in charges.slots),
        reservation,
    )


@dataclass(frozen=True, slots=True)
class RefusalReason:
    limit_name: str
    message: str
    retry_after_s: float


def explain_refusal(planned: PlannedReservation, refusal: Refusal) -> RefusalReason:
    """The 429's limit name, message and ``Retry-After`` for a store's refusal."""
    now = planned.plan.now
    if refusal.kind == "window":
        lbl = planned.windows[refusal.index]
        retry = window_retry_after(refusal.buckets, now, lbl.cost, lbl.limit)
    elif refusal.kind == "budget":
        lbl = planned.budgets[refusal.index]
        assert lbl.period is not None
        retry = budget_retry_after(lbl.period, now)
    else:
        lbl = planned.slots[refusal.index]
        retry = _SLOT_RETRY_S
    if lbl.cost > lbl.limit:
        message = (
            f"Request too large for {lbl.description} on {lbl.subject}: it may use up to "
            f"{lbl.cost} {lbl.unit}, the limit is {lbl.limit}."
        )
        if lbl.unit == "tokens":
            message += (
                " That bound counts every prompt and, for each choice, max_tokens (or the "
                "model's whole context when max_tokens is not set): lower max_tokens or n."
            )
    else:
        message = (
            f"Rate limit reached for {lbl.description} on {lbl.subject}: limit {lbl.limit}, "
            f"used {refusal.used}, requested {lbl.cost}. Please try again in {retry:.3g}s."
        )
    return RefusalReason(lbl.limit_name, message, retry)


def plan_settlement(reservation: Reservation, actual_tokens: int) -> SettlePlan:
    """Replace the reserved token estimate by the real count and release the slots."""
    delta = max(0, actual_tokens) - reservation.reserved_tokens
    return SettlePlan(
        window_deltas=tuple(
            (key, reservation.now_index, delta) for key in reservation.token_windows
        )
        if delta
        else (),
        budget_deltas=tuple((key, delta) for key in reservation.budgets) if delta else (),
        slot_keys=reservation.slots,
        slot_id=reservation.slot_id,
    )
