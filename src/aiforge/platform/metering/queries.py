"""Usage totals: by key, project, model or day, over a time range, with filters; CSV export.

Plain functions over a SQLAlchemy connection; the ledger runs them off the event loop.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import astuple, dataclass, fields
from datetime import UTC, date, datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, Connection, case, func, select

from aiforge.platform.limits.admission import BudgetUsage
from aiforge.platform.limits.plan import Scope
from aiforge.platform.limits.windows import day_period, month_period, period_start
from aiforge.platform.metering.table import UsageRecordRow as R

GroupBy = Literal["key", "project", "model", "day"]
GROUP_BY_VALUES: tuple[GroupBy, ...] = ("key", "project", "model", "day")

_GROUP_COLUMNS: dict[GroupBy, Any] = {
    "key": R.key_id,
    "project": R.project_id,
    "model": R.model,
    "day": R.day,
}


@dataclass(frozen=True, slots=True)
class UsageFilter:
    """Which records count. ``since`` inclusive, ``until`` exclusive (request start time)."""

    since: datetime | None = None
    until: datetime | None = None
    project_id: str | None = None
    key_id: str | None = None
    model: str | None = None


@dataclass(frozen=True, slots=True)
class UsageTotal:
    """One group's totals."""

    group: str
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    total_tokens: int


def _conditions(filters: UsageFilter) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if filters.since is not None:
        conditions.append(R.started_at >= filters.since)
    if filters.until is not None:
        conditions.append(R.started_at < filters.until)
    if filters.project_id is not None:
        conditions.append(R.project_id == filters.project_id)
    if filters.key_id is not None:
        conditions.append(R.key_id == filters.key_id)
    if filters.model is not None:
        conditions.append(R.model == filters.model)
    return conditions


def usage_totals(
    connection: Connection, *, group_by: GroupBy, filters: UsageFilter
) -> list[UsageTotal]:
    """Totals per group, ordered by group."""
    group = _GROUP_COLUMNS[group_by]
    query = (
        select(
            group,
            func.count(),
            func.sum(case((R.status_code >= 400, 1), else_=0)),
            func.sum(R.prompt_tokens),
            func.sum(R.completion_tokens),
            func.sum(R.cached_tokens),
            func.sum(R.total_tokens),
        )
        .where(*_conditions(filters))
        .group_by(group)
        .order_by(group)
    )
    return [
        UsageTotal(_group_text(row[0]), *(int(value or 0) for value in row[1:]))
        for row in connection.execute(query)
    ]


def _group_text(value: object) -> str:
    return value.isoformat() if isinstance(value, date) else str(value)


def totals_csv(totals: Sequence[UsageTotal], group_by: GroupBy) -> str:
    """CSV with a header row; the first column is named after the grouping."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([group_by, *[f.name for f in fields(UsageTotal)][1:]])
    writer.writerows(astuple(total) for total in totals)
    return buffer.getvalue()


def budget_usage(connection: Connection, now: float) -> list[BudgetUsage]:
    """Tokens every key and project spent this UTC day and month (to re-seed budgets)."""
    day, month = day_period(now), month_period(now)
    day_start = datetime.fromtimestamp(period_start(day), UTC).date()
    month_start = datetime.fromtimestamp(period_start(month), UTC).date()
    today = func.sum(case((R.day >= day_start, R.total_tokens), else_=0))
    usage: list[BudgetUsage] = []
    scopes: tuple[tuple[Scope, Any], ...] = (("key", R.key_id), ("project", R.project_id))
    for scope, column in scopes:
        query = select(column, today, func.sum(R.total_tokens)).where(R.day >= month_start)
        for subject_id, day_tokens, month_tokens in connection.execute(query.group_by(column)):
            usage.append(
                BudgetUsage(scope, str(subject_id), int(day_tokens or 0), int(month_tokens or 0))
            )
    return usage
