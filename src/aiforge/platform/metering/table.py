"""The ``usage_records`` table: one row per request, the bill's source of truth.

No foreign keys to keys or projects on purpose: a record outlives a deleted key, and a
journal replay must never be refused by a constraint other than the ``request_id``
uniqueness that makes it idempotent.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, Boolean, Date, Float, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from aiforge.platform.db.base import Base, UtcDateTime


class UsageRecordRow(Base):
    __tablename__ = "usage_records"
    __table_args__ = (
        Index("ix_usage_records_key_day", "key_id", "day"),
        Index("ix_usage_records_project_day", "project_id", "day"),
        Index("ix_usage_records_model_day", "model", "day"),
        Index("ix_usage_records_day", "day"),
        Index("ix_usage_records_started_at", "started_at"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    request_id: Mapped[str] = mapped_column(String(128), unique=True)
    key_id: Mapped[str] = mapped_column(String(64))
    project_id: Mapped[str] = mapped_column(String(64))
    organization_id: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(256))
    kind: Mapped[str] = mapped_column(String(16))
    status_code: Mapped[int] = mapped_column(Integer())
    prompt_tokens: Mapped[int] = mapped_column(Integer(), default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer(), default=0)
    cached_tokens: Mapped[int] = mapped_column(Integer(), default=0)
    total_tokens: Mapped[int] = mapped_column(Integer(), default=0)
    deployment: Mapped[str] = mapped_column(String(256), default="")
    replica: Mapped[str] = mapped_column(String(256), default="")
    ttft_ms: Mapped[float | None] = mapped_column(Float(), nullable=True)
    latency_ms: Mapped[float] = mapped_column(Float(), default=0.0)
    stream: Mapped[bool] = mapped_column(Boolean(), default=False)
    cancelled: Mapped[bool] = mapped_column(Boolean(), default=False)
    error_type: Mapped[str | None] = mapped_column(String(64), nullable=True)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime())
    day: Mapped[date] = mapped_column(Date())
    """The UTC day of ``started_at`` (grouping and budget queries without date functions)."""
