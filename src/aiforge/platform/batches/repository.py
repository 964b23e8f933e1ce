"""Queries over ``batches`` and ``batch_lines``. Keyword-only arguments; every query of the
API side names the project; committing is the caller's.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from aiforge.platform.batches.output import LineTokens
from aiforge.platform.batches.table import BatchLineRow, BatchRow

ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")
"""States in which a runner works on a batch."""


def get_batch(session: Session, *, project_id: str, batch_id: str) -> BatchRow | None:
    query = select(BatchRow).where(BatchRow.id == batch_id, BatchRow.project_id == project_id)
    return session.scalars(query).first()


def lock_batch(session: Session, *, batch_id: str) -> BatchRow | None:
    """The batch, locked until the commit (PostgreSQL; SQLite serializes writers)."""
    return session.scalars(
        select(BatchRow).where(BatchRow.id == batch_id).with_for_update()
    ).first()


def add_batch(session: Session, **columns: Any) -> BatchRow:
    row = BatchRow(**columns)
    session.add(row)
    session.flush()
    return row


def list_batches(
    session: Session, *, project_id: str, limit: int, after: BatchRow | None
) -> Sequence[BatchRow]:
    """Newest first; those older than ``after`` only."""
    query = select(BatchRow).where(BatchRow.project_id == project_id)
    if after is not None:
        query = query.where(
            or_(
                BatchRow.created_at < after.created_at,
                and_(BatchRow.created_at == after.created_at, BatchRow.id < after.id),
            )
        )
    query = query.order_by(BatchRow.created_at.desc(), BatchRow.id.desc()).limit(limit)
    return session.scalars(query).all()


def active_batch_reading(session: Session, *, project_id: str, file_id: str) -> str | None:
    """The id of a batch still running on input file ``file_id``, if any."""
    query = select(BatchRow.id).where(
        BatchRow.project_id == project_id,
        BatchRow.input_file_id == file_id,
        BatchRow.status.in_(ACTIVE),
    )
    return session.scalars(query.limit(1)).first()


def claim_batches(
    session: Session, *, runner: str, now: datetime, lease_until: datetime
) -> Sequence[BatchRow]:
    """Take (or renew) the lease of every active batch nobody else holds, and return the
    active batches this runner holds."""
    session.execute(
        update(BatchRow)
        .where(
            BatchRow.status.in_(ACTIVE),
            or_(BatchRow.runner.is_(None), BatchRow.runner == runner, BatchRow.lease_until < now),
        )
        .values(runner=runner, lease_until=lease_until)
    )
    query = select(BatchRow).where(BatchRow.status.in_(ACTIVE), BatchRow.runner == runner)
    return session.scalars(query.order_by(BatchRow.created_at, BatchRow.id)).all()


def release_batches(session: Session, *, runner: str) -> None:
    session.execute(
        update(BatchRow).where(BatchRow.runner == runner).values(runner=None, lease_until=None)
    )


def line_progress(session: Session, *, batch_id: str) -> tuple[set[int], dict[int, int]]:
    """The lines of ``batch_id`` with a result, and the attempts of those without one."""
    rows = session.execute(
        select(BatchLineRow.line, BatchLineRow.outcome, BatchLineRow.attempts).where(
            BatchLineRow.batch_id == batch_id
        )
    ).all()
    done = {line for line, outcome, _ in rows if outcome is not None}
    attempts = {line: tries for line, outcome, tries in rows if outcome is None and tries}
    return done, attempts


def record_attempt(session: Session, *, batch_id: str, line: int, attempts: int) -> None:
    """Note that ``attempts`` attempts of the line were used (refused ones included)."""
    row = session.get(BatchLineRow, (batch_id, line), with_for_update=True)
    if row is None:
        session.add(BatchLineRow(batch_id=batch_id, line=line, attempts=attempts))
    elif row.attempts < attempts:
        row.attempts = attempts
    session.flush()


def store_result(
    session: Session,
    *,
    batch_id: str,
    line: int,
    custom_id: str,
    outcome: str,
    status_code: int,
    request_id: str,
    body: Any,
    tokens: LineTokens,
    now: datetime,
) -> bool:
    """Store a line's one result and count it in its batch; False (and nothing changed)
    when the line already has one."""
    row = session.get(BatchLineRow, (batch_id, line), with_for_update=True)
    if row is None:
        row = BatchLineRow(batch_id=batch_id, line=line, attempts=0)
        session.add(row)
    elif row.outcome is not None:
        return False
    row.custom_id, row.outcome, row.status_code = custom_id, outcome, status_code
    row.request_id, row.body, row.completed_at = request_id, body, now
    counter = BatchRow.completed if outcome == "succeeded" else BatchRow.failed
    session.execute(
        update(BatchRow)
        .where(BatchRow.id == batch_id)
        .values({
            counter: counter + 1,
            BatchRow.input_tokens: BatchRow.input_tokens + tokens.input,
            BatchRow.output_tokens: BatchRow.output_tokens + tokens.output,
            BatchRow.cached_tokens: BatchRow.cached_tokens + tokens.cached,
            BatchRow.reasoning_tokens: BatchRow.reasoning_tokens + tokens.reasoning,
        })
    )  # fmt: skip
    session.flush()
    return True


def line_results(session: Session, *, batch_id: str) -> Iterator[BatchLineRow]:
    """The lines of ``batch_id`` that have a result, by index, fetched in pages."""
    query = (
        select(BatchLineRow)
        .where(BatchLineRow.batch_id == batch_id, BatchLineRow.outcome.is_not(None))
        .order_by(BatchLineRow.line)
        .execution_options(yield_per=500)
    )
    yield from session.scalars(query)
