"""The pure window and budget arithmetic."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from aiforge.platform.limits.windows import (
    BUCKETS_PER_WINDOW,
    bucket_index,
    budget_retry_after,
    day_period,
    fits,
    month_period,
    period_start,
    window_retry_after,
    window_usage,
)


def test_window_counts_the_live_buckets_only() -> None:
    now = bucket_index(1_000.5)
    buckets = {now: 3, now - 30: 2, now - 60: 1, now - 61: 100}
    assert window_usage(buckets, now) == 6


def test_window_covers_at_least_a_full_minute() -> None:
    # A request 59.99 s ago must still count: the window is conservative.
    sent = 1_000.99
    now = sent + 59.99
    assert window_usage({bucket_index(sent): 1}, bucket_index(now)) == 1


@pytest.mark.parametrize(
    ("used", "cost", "limit", "expected"),
    [(0, 1, 1, True), (1, 1, 1, False), (5, 0, 6, True), (6, 0, 6, False), (0, 7, 6, False)],
)
def test_fits(used: int, cost: int, limit: int, expected: bool) -> None:
    assert fits(used, cost, limit) is expected


def test_retry_after_waits_for_the_oldest_bucket_to_expire() -> None:
    now = 1_030.25
    buckets = {1_000: 4, 1_020: 6}  # limit 10: full
    # Bucket 1000 stops counting at (1000 + 60 + 1) s.
    assert window_retry_after(buckets, now, 1, 10) == pytest.approx(1_061 - now)
    # Needing 5 means bucket 1020 must go too.
    assert window_retry_after(buckets, now, 5, 10) == pytest.approx(1_081 - now)


def test_retry_after_is_zero_when_it_fits_and_a_window_when_it_never_can() -> None:
    assert window_retry_after({}, 5.0, 1, 10) == 0.0
    assert window_retry_after({}, 5.0, 11, 10) == BUCKETS_PER_WINDOW * 1.0


def test_periods_are_utc_calendar_days_and_months() -> None:
    now = datetime(2024, 2, 29, 23, 59, 30, tzinfo=UTC).timestamp()
    day, month = day_period(now), month_period(now)
    assert day.period_id == "2024-02-29"
    assert day.ends_at == datetime(2024, 3, 1, tzinfo=UTC).timestamp()
    assert month.period_id == "2024-02"
    assert month.ends_at == datetime(2024, 3, 1, tzinfo=UTC).timestamp()
    assert budget_retry_after(day, now) == pytest.approx(30.0)
    assert period_start(month) == datetime(2024, 2, 1, tzinfo=UTC).timestamp()
    assert period_start(day) == datetime(2024, 2, 29, tzinfo=UTC).timestamp()


def test_newer_buckets_count_for_a_request_that_read_the_clock_earlier() -> None:
    # Another gateway already charged the next second; this request's plan is older.
    now = bucket_index(2_000.9)
    assert window_usage({now + 1: 5, now: 1}, now) == 6
