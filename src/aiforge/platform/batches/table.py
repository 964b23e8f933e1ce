"""The ``batches`` and ``batch_lines`` tables.

``batches`` holds one row per batch: its request, its state and timestamps, its request
counts and token totals (updated in the transaction that stores each line's result), and
the runner's lease (``runner``, ``lease_until``): only the gateway holding an unexpired
lease runs the batch, so gateways sharing a database never run one batch twice.

``batch_lines`` holds one row per line that was attempted: ``attempts`` (how many metered
attempts were refused and must not be reused as request ids) and, once the line is done,
its result (``outcome`` set). A result is written once: a row whose ``outcome`` is set is
never run again, and never overwritten.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from aiforge.platform.db.base import Base, UtcDateTime

_BIG = BigInteger().with_variant(Integer(), "sqlite")


class BatchRow(Base):
    __tablename__ = "batches"
    __table_args__ = (
        Index("ix_batches_project_created", "project_id", "created_at"),
        Index("ix_batches_status", "status"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(64))
    key_id: Mapped[str] = mapped_column(String(64))
    principal: Mapped[dict[str, Any]] = mapped_column(JSON)
    """The creator's principal (key, project, role, allowed models): lines run as it."""
    endpoint: Mapped[str] = mapped_column(String(64))
    model: Mapped[str | None] = mapped_column(String(256), nullable=True)
    input_file_id: Mapped[str] = mapped_column(String(64))
    completion_window: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    batch_metadata: Mapped[dict[str, str] | None] = mapped_column("metadata", JSON, nullable=True)
    errors: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)
    output_file_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_file_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    total: Mapped[int] = mapped_column(Integer, default=0)
    completed: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    input_tokens: Mapped[int] = mapped_column(_BIG, default=0)
    output_tokens: Mapped[int] = mapped_column(_BIG, default=0)
    cached_tokens: Mapped[int] = mapped_column(_BIG, default=0)
    reasoning_tokens: Mapped[int] = mapped_column(_BIG, default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    in_progress_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    finalizing_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    failed_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    expired_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    cancelling_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    cancelled_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    runner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class BatchLineRow(Base):
    __tablename__ = "batch_lines"

    batch_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    line: Mapped[int] = mapped_column(Integer, primary_key=True)
    """The request's index in the input file (0-based, blank lines not counted)."""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    custom_id: Mapped[str | None] = mapped_column(String(512), nullable=True)
    outcome: Mapped[str | None] = mapped_column(String(16), nullable=True)
    """None while the line has no result; else ``succeeded`` or ``failed``."""
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    body: Mapped[Any] = mapped_column(JSON, nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
