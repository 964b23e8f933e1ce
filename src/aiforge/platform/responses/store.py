"""The gateway's :class:`~aiforge.gateway.responses.store.ResponseStore`, in the platform
database: stored Responses shared by every gateway process of the platform.

The queries are synchronous SQLAlchemy (like the rest of the platform) and run in a worker
thread (:func:`asyncio.to_thread`), so the gateway's event loop never waits on the database.
"""

from __future__ import annotations

import asyncio

from sqlalchemy.orm import Session, sessionmaker

from aiforge.gateway.responses.store import StoredResponse
from aiforge.platform.responses import repository as repo


class SqlResponseStore:
    """Stored Responses in the ``responses`` table, scoped by project id."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    async def put(self, record: StoredResponse) -> None:
        await asyncio.to_thread(self._put, record)

    async def get(self, project_id: str, response_id: str) -> StoredResponse | None:
        return await asyncio.to_thread(self._get, project_id, response_id)

    async def delete(self, project_id: str, response_id: str) -> bool:
        return await asyncio.to_thread(self._delete, project_id, response_id)

    def _put(self, record: StoredResponse) -> None:
        with self._sessions.begin() as session:
            repo.add_response(session, record=record)

    def _get(self, project_id: str, response_id: str) -> StoredResponse | None:
        with self._sessions() as session:
            row = repo.get_response(session, project_id=project_id, response_id=response_id)
            return None if row is None else repo.record_of(row)

    def _delete(self, project_id: str, response_id: str) -> bool:
        with self._sessions.begin() as session:
            return repo.delete_response(session, project_id=project_id, response_id=response_id)
