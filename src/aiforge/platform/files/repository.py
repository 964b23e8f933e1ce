"""Queries over the ``files`` table. Keyword-only arguments; every query names the project.

Each function takes an open :class:`~sqlalchemy.orm.Session` and leaves committing to the
caller (:class:`aiforge.platform.files.service.FileService`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from aiforge.platform.files.table import FileRow

Order = Literal["asc", "desc"]


def get_file(session: Session, *, project_id: str, file_id: str) -> FileRow | None:
    query = select(FileRow).where(FileRow.id == file_id, FileRow.project_id == project_id)
    return session.scalars(query).first()


def add_file(
    session: Session,
    *,
    file_id: str,
    project_id: str,
    filename: str,
    purpose: str,
    size: int,
    now: datetime,
) -> FileRow:
    row = FileRow(
        id=file_id, project_id=project_id, filename=filename, purpose=purpose, bytes=size,
        created_at=now,
    )  # fmt: skip
    session.add(row)
    session.flush()
    return row


def list_files(
    session: Session,
    *,
    project_id: str,
    purpose: str | None,
    limit: int,
    order: Order,
    after: FileRow | None,
) -> Sequence[FileRow]:
    """Up to ``limit`` files by creation time (ties by id), those past ``after`` only."""
    query = select(FileRow).where(FileRow.project_id == project_id)
    if purpose is not None:
        query = query.where(FileRow.purpose == purpose)
    if after is not None:
        if order == "desc":
            past = or_(
                FileRow.created_at < after.created_at,
                and_(FileRow.created_at == after.created_at, FileRow.id < after.id),
            )
        else:
            past = or_(
                FileRow.created_at > after.created_at,
                and_(FileRow.created_at == after.created_at, FileRow.id > after.id),
            )
        query = query.where(past)
    if order == "desc":
        query = query.order_by(FileRow.created_at.desc(), FileRow.id.desc())
    else:
        query = query.order_by(FileRow.created_at.asc(), FileRow.id.asc())
    return session.scalars(query.limit(limit)).all()


def delete_file(session: Session, *, row: FileRow) -> None:
    session.delete(row)
    session.flush()
