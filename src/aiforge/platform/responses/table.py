"""The ``responses`` table: one stored Response (``/v1/responses`` with ``store``) per row.

``response`` is the Response object as the API returned it, ``input_items`` the items the
model read (the stored conversation it continued plus the request's own input, each with
its id). Every query names the project: a row is never read across projects. No foreign
key to ``projects`` (like ``usage_records``): the row is only reached through its project.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from aiforge.platform.db.base import Base, UtcDateTime


class ResponseRow(Base):
    __tablename__ = "responses"
    __table_args__ = (Index("ix_responses_project_created", "project_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(256))
    status: Mapped[str] = mapped_column(String(16))
    previous_response_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    response: Mapped[dict[str, Any]] = mapped_column(JSON)
    input_items: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
