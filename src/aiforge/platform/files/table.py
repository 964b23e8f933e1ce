"""The ``files`` table: one row per file uploaded to ``/v1/files`` (or written by a batch).

The bytes live on disk (:class:`aiforge.platform.files.storage.FileStore`); the row is the
file's metadata and the only way to reach them: every query names the project, so a file is
never read across projects. No foreign key to ``projects`` (like ``usage_records``).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from aiforge.platform.db.base import Base, UtcDateTime


class FileRow(Base):
    __tablename__ = "files"
    __table_args__ = (Index("ix_files_project_created", "project_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(64))
    filename: Mapped[str] = mapped_column(String(512))
    purpose: Mapped[str] = mapped_column(String(32))
    bytes: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
