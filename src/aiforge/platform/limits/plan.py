"""Turn a request and its two policies into one reservation plan, and a refusal into a 429.

Pure: the clock's reading, the slot id and the policies are passed in.

Everything about a (key, project) pair's charges that does not change from one request to
the next — counter keys, limits, the day's and month's budget counters, and what a refusal
would say — is a :class:`ChargeShape`, built once and kept by admission while the policies
stay the same. The accepted path then builds no string and only two small tuples (the plan
and the reservation); the refusal's labels and message are made only when a charge does not
fit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple

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
    BUCKET_S,
    BudgetPeriod,
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
_DAY_S = 86_400.0


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


class _LabelSpec(NamedTuple):
    """A label without the request's figures (its cost and the budget's current period)."""

    scope: Scope
    field: str
    subject: str
    limit: int
    unit: str
    per_token: bool
    period: int | None
    """For a budget: 0 for the day, 1 for the month."""


class _BudgetSpec(NamedTuple):
    scope: Scope
    subject_id: str
    period: int
    limit: int


class Reservation(NamedTuple):
    """What a successful admit holds, kept on the ticket for settle and lease renewal."""

    now_index: int
    token_windows: tuple[str, ...]
    budgets: tuple[str, ...]
    slots: tuple[str, ...]
    slot_id: str
    reserved_tokens: int


def budget_key(scope: Scope, subject_id: str, period: BudgetPeriod) -> str:
    return f"{scope}:{subject_id}:{period.name}:{period.period_id}"


def _periods(day_number: int) -> tuple[BudgetPeriod, BudgetPeriod]:
    moment = day_number * _DAY_S
    return day_period(moment), month_period(moment)


class ChargeShape:
    """The charges of one (key, project) pair of policies, for every request they make.

    Not thread-safe: the budget counters of the current day are swapped in place when the
    UTC day changes (admission runs on one event loop).
    """

    __slots__ = (
        "_budget_day",
        "_budget_keys",
        "_budget_specs",
        "_budgets",
        "budget_labels",
        "slot_keys",
        "slot_labels",
        "slots",
        "subjects",
        "token_windows",
        "unlimited",
        "window_labels",
        "windows",
    )

    def __init__(self, subjects: tuple[Subject, ...]) -> None:
        windows: list[tuple[WindowCharge, _LabelSpec]] = []
        budgets: list[tuple[_BudgetSpec, _LabelSpec]] = []
        slots: list[tuple[SlotClaim, _LabelSpec]] = []
        for s in subjects:
            _add_subject(s, windows, budgets, slots)
        self.subjects = subjects
        self.windows = tuple(charge for charge, _ in windows)
        self.window_labels = tuple(label for _, label in windows)
        self.token_windows = tuple(c.key for c in self.windows if c.per_token)
        self._budget_specs = tuple(spec for spec, _ in budgets)
        self.budget_labels = tuple(label for _, label in budgets)
        self.slots = tuple(claim for claim, _ in slots)
        self.slot_labels = tuple(label for _, label in slots)
        self.slot_keys = tuple(c.key for c in self.slots)
        self.unlimited = not (windows or budgets or slots)
        self._budget_day: int | None = None
        self._budgets: tuple[BudgetCharge, ...] = ()
        self._budget_keys: tuple[str, ...] = ()

    def budgets_at(self, now: float) -> tuple[tuple[BudgetCharge, ...], tuple[str, ...]]:
        """The budget charges and their counter keys for the UTC day of ``now`` (cached)."""
        day = math.floor(now / _DAY_S)
        if day != self._budget_day:
            periods = _periods(day)
            self._budgets = tuple(
                BudgetCharge(
                    budget_key(spec.scope, spec.subject_id, periods[spec.period]),
                    spec.limit,
                    periods[spec.period].ends_at + _BUDGET_GRACE_S,
                )
                for spec in self._budget_specs
            )
            self._budget_keys = tuple(charge.key for charge in self._budgets)
            self._budget_day = day
        return self._budgets, self._budget_keys


def _add_subject(
    s: Subject,
    windows: list[tuple[WindowCharge, _LabelSpec]],
    budgets: list[tuple[_BudgetSpec, _LabelSpec]],
    slots: list[tuple[SlotClaim, _LabelSpec]],
) -> None:
    base, p, scope, shown = f"{s.scope}:{s.subject_id}", s.policy, s.scope, s.display
    if p.requests_per_minute is not None:
        limit = p.requests_per_minute
        label = _LabelSpec(scope, "requests_per_minute", shown, limit, "requests", False, None)
        windows.append((WindowCharge(f"{base}:rpm", limit, False), label))
    if p.tokens_per_minute is not None:
        limit = p.tokens_per_minute
        label = _LabelSpec(scope, "tokens_per_minute", shown, limit, "tokens", True, None)
        windows.append((WindowCharge(f"{base}:tpm", limit, True), label))
    for period, (name, budget) in enumerate(
        (("day", p.tokens_per_day), ("month", p.tokens_per_month))
    ):
        if budget is not None:
            label = _LabelSpec(scope, f"tokens_per_{name}", shown, budget, "tokens", True, period)
            budgets.append((_BudgetSpec(scope, s.subject_id, period, budget), label))
    if p.max_concurrent is not None:
        limit = p.max_concurrent
        label = _LabelSpec(scope, "max_concurrent", shown, limit, "requests", False, None)
        slots.append((SlotClaim(f"{base}:slots", limit), label))


def plan_reservation(
    shape: ChargeShape,
    *,
    now: float,
    estimated_tokens: int,
    slot_id: str,
    lease_s: float,
) -> tuple[ReservationPlan, Reservation]:
    """Every charge the request makes, for one atomic check-and-reserve, and what an admit
    holds for settle once the store accepted it."""
    tokens = estimated_tokens if estimated_tokens > 0 else 0
    now_index = math.floor(now / BUCKET_S)
    budgets, budget_keys = shape.budgets_at(now)
    plan = ReservationPlan(
        now, now_index, tokens, shape.windows, budgets, shape.slots, slot_id, now + lease_s
    )
    reservation = Reservation(
        now_index, shape.token_windows, budget_keys, shape.slot_keys, slot_id, tokens
    )
    return plan, reservation


def refused_label(shape: ChargeShape, plan: ReservationPlan, refusal: Refusal) -> LimitLabel:
    """The label of the charge ``refusal`` names, with this request's cost and period."""
    if refusal.kind == "window":
        spec = shape.window_labels[refusal.index]
    elif refusal.kind == "budget":
        spec = shape.budget_labels[refusal.index]
    else:
        spec = shape.slot_labels[refusal.index]
    period = None
    if spec.period is not None:
        period = _periods(math.floor(plan.now / _DAY_S))[spec.period]
    cost = plan.tokens if spec.per_token else 1
    limit_name = f"{spec.scope}.{spec.field}"
    return LimitLabel(limit_name, spec.subject, spec.limit, cost, spec.unit, period)


@dataclass(frozen=True, slots=True)
class RefusalReason:
    limit_name: str
    message: str
    retry_after_s: float


def explain_refusal(shape: ChargeShape, plan: ReservationPlan, refusal: Refusal) -> RefusalReason:
    """The 429's limit name, message and ``Retry-After`` for a store's refusal."""
    now = plan.now
    lbl = refused_label(shape, plan, refusal)
    if refusal.kind == "window":
        retry = window_retry_after(refusal.buckets, now, lbl.cost, lbl.limit)
    elif refusal.kind == "budget":
        assert lbl.period is not None
        retry = budget_retry_after(lbl.period, now)
    else:
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
    delta = (actual_tokens if actual_tokens > 0 else 0) - reservation.reserved_tokens
    return SettlePlan(
        reservation.token_windows if delta else (),
        reservation.budgets if delta else (),
        reservation.now_index,
        delta,
        reservation.slots,
        reservation.slot_id,
    )
