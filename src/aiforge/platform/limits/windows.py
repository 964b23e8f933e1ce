"""Pure arithmetic for rate windows and token budgets. No I/O, no clock: time is passed in.

**Sliding windows** (requests/minute, tokens/minute) are kept as per-bucket counters
(``BUCKET_S`` wide). At time ``t`` the usage of a window is the sum of the buckets
``[i - n, i]`` where ``i = bucket_index(t)`` and ``n = WINDOW_S / BUCKET_S``: the ``n + 1``
buckets cover between ``WINDOW_S`` and ``WINDOW_S + BUCKET_S`` seconds, so the count can
never be smaller than what arrived in the true trailing window. The limiter therefore never
admits more than the limit within any 60 s span (it may admit up to ``BUCKET_S / WINDOW_S``
≈ 1.6 % less under sustained saturation). Memory is ``n + 1`` counters per subject, whatever
the limit, unlike a sliding log.

**Budgets** (tokens per day / month) are plain counters named after the UTC calendar period
they belong to; a new period starts a new counter, so nothing needs resetting.
"""

from __future__ import annotations

import calendar
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

WINDOW_S = 60.0
BUCKET_S = 1.0
BUCKETS_PER_WINDOW = int(WINDOW_S / BUCKET_S)


def bucket_index(now: float, bucket_s: float = BUCKET_S) -> int:
    """The bucket a moment falls into."""
    return math.floor(now / bucket_s)


def oldest_live_bucket(now_index: int, n: int = BUCKETS_PER_WINDOW) -> int:
    """Buckets older than this no longer count (and may be deleted)."""
    return now_index - n


def window_usage(buckets: Mapping[int, int], now_index: int, n: int = BUCKETS_PER_WINDOW) -> int:
    """What the window holds at ``now_index``: the sum of the live buckets.

    Buckets *newer* than ``now_index`` count too: another gateway (or a request of this one
    that read the clock later but reached the store first) may already have charged them.
    """
    oldest = oldest_live_bucket(now_index, n)
    return sum(count for index, count in buckets.items() if index >= oldest)


def fits(used: int, cost: int, limit: int) -> bool:
    """True if ``cost`` more fits under ``limit``.

    A zero cost (a request whose token estimate is 0) still needs the limit not to be spent,
    so an exhausted window or budget refuses everything.
    """
    if cost <= 0:
        return used < limit
    return used + cost <= limit


def window_retry_after(
    buckets: Mapping[int, int],
    now: float,
    cost: int,
    limit: int,
    *,
    bucket_s: float = BUCKET_S,
    n: int = BUCKETS_PER_WINDOW,
) -> float:
    """Seconds until ``cost`` would fit, assuming nothing else arrives meanwhile.

    Bucket ``j`` stops counting at ``(j + n + 1) * bucket_s``; walk the live buckets from the
    oldest and find the first moment enough has expired. A cost above the limit never fits:
    the answer is then a whole window (the caller says the request is too large).
    """
    if cost > limit:
        return n * bucket_s
    now_index = bucket_index(now, bucket_s)
    oldest = oldest_live_bucket(now_index, n)
    live = sorted((i, c) for i, c in buckets.items() if i >= oldest)
    excess = sum(c for _, c in live) + max(cost, 1) - limit
    if excess <= 0:
        return 0.0
    for index, count in live:
        excess -= count
        if excess <= 0:
            return max(0.0, (index + n + 1) * bucket_s - now)
    return n * bucket_s


@dataclass(frozen=True, slots=True)
class BudgetPeriod:
    """One calendar period of a token budget."""

    name: str
    """``day`` or ``month``."""
    period_id: str
    """``2025-01-31`` or ``2025-01`` (UTC)."""
    ends_at: float
    """Unix time the period ends and its budget resets."""


def day_period(now: float) -> BudgetPeriod:
    return _day_period(math.floor(now / 86_400.0))


def month_period(now: float) -> BudgetPeriod:
    return _month_period(math.floor(now / 86_400.0))


# Periods change once a day: cache them by UTC day number (they sit on the request path).
@functools.lru_cache(maxsize=64)
def _day_period(day_number: int) -> BudgetPeriod:
    now = day_number * 86_400.0
    moment = datetime.fromtimestamp(now, UTC)
    start = datetime(moment.year, moment.month, moment.day, tzinfo=UTC)
    return BudgetPeriod("day", start.strftime("%Y-%m-%d"), start.timestamp() + 86_400.0)


@functools.lru_cache(maxsize=64)
def _month_period(day_number: int) -> BudgetPeriod:
    moment = datetime.fromtimestamp(day_number * 86_400.0, UTC)
    days = calendar.monthrange(moment.year, moment.month)[1]
    start = datetime(moment.year, moment.month, 1, tzinfo=UTC)
    return BudgetPeriod("month", start.strftime("%Y-%m"), start.timestamp() + days * 86_400.0)


def period_start(period: BudgetPeriod) -> float:
    """Unix time the period began (for re-seeding budgets from the usage ledger)."""
    if period.name == "day":
        return period.ends_at - 86_400.0
    moment = datetime.strptime(period.period_id, "%Y-%m").replace(tzinfo=UTC)
    return moment.timestamp()


def budget_retry_after(period: BudgetPeriod, now: float) -> float:
    """A spent budget frees up when its period ends."""
    return max(0.0, period.ends_at - now)
