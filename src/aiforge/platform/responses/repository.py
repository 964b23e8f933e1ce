"""Queries over the ``responses`` table. Keyword-only arguments; every query names the project.

Each function takes an open :class:`~sqlalchemy.orm.Session` and leaves committing to the
caller (:class:`aiforge.platform.responses.store.SqlResponseStore`).
"""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from aiforge.gateway.responses.store import StoredResponse
from aiforge.platform.responses.table import ResponseRow


def get_response(session: Session, *, project_id: str, response_id: str) -> ResponseRow | None:
    query = select(ResponseRow).where(
        ResponseRow.id == response_id, ResponseRow.project_id == project_id
    )
    return session.scalars(query).first()


def add_response(session: Session, *, record: StoredResponse) -> None:
    session.add(
        ResponseRow(
            id=record.id,
            project_id=record.project_id,
            model=record.model,
            status=record.status,
            previous_response_id=record.previous_response_id,
            response=record.response,
            input_items=record.input_items,
            created_at=record.created_at,
        )
    )
    session.flush()


def delete_response(session: Session, *, project_id: str, response_id: str) -> bool:
    """Delete the project's response; False when it had none with that id."""
    result = session.execute(
        delete(ResponseRow).where(
            ResponseRow.id == response_id, ResponseRow.project_id == project_id
        )
    )
    return bool(getattr(result, "rowcount", 0))


def record_of(row: ResponseRow) -> StoredResponse:
    return StoredResponse(
        id=row.id,
        project_id=row.project_id,
        model=row.model,
        status=row.status,
        previous_response_id=row.previous_response_id,
        response=row.response,
        input_items=row.input_items,
        created_at=row.created_at,
    )
