"""The SQL ``ResponseStore`` on SQLite and PostgreSQL: migrated by ``0005_responses``, rows
scoped by project, JSON kept exactly, deletes final."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from aiforge.gateway.responses.store import InMemoryResponseStore, ResponseStore, StoredResponse
from aiforge.platform.db.engine import make_engine, make_sessionmaker
from aiforge.platform.db.migrate import upgrade_to_head
from aiforge.platform.db.tables import load_all_tables
from aiforge.platform.responses.store import SqlResponseStore

CREATED = datetime(2025, 1, 5, 12, 0, tzinfo=UTC)


def _record(response_id: str, project_id: str = "p1") -> StoredResponse:
    return StoredResponse(
        id=response_id,
        project_id=project_id,
        model="demo",
        status="completed",
        previous_response_id=None,
        response={"id": response_id, "object": "response", "output": [
            {"id": "msg_2", "type": "message", "role": "assistant", "status": "completed",
             "content": [{"type": "output_text", "text": "héllo ✓", "annotations": [],
                          "logprobs": []}]}]},
        input_items=[{"id": "msg_1", "type": "message", "role": "user", "status": "completed",
                      "content": [{"type": "input_text", "text": "hi"}]}],
        created_at=CREATED,
    )  # fmt: skip


@pytest.fixture
def sql_store(database_url: str) -> Iterator[SqlResponseStore]:
    engine = make_engine(database_url)
    try:
        upgrade_to_head(database_url, engine=engine)
        yield SqlResponseStore(make_sessionmaker(engine))
    finally:
        engine.dispose()


def test_the_migration_creates_the_table_the_models_describe(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        upgrade_to_head(database_url, engine=engine)
        assert "responses" in inspect(engine).get_table_names()
        with engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), load_all_tables())
        assert [change for change in diff if "responses" in repr(change)] == []
    finally:
        engine.dispose()


async def _check_scoped_by_project(store: ResponseStore) -> None:
    record = _record("resp_1")
    await store.put(record)
    assert await store.get("p1", "resp_1") == record
    assert await store.get("p2", "resp_1") is None  # another project's: not there
    assert await store.delete("p2", "resp_1") is False
    assert await store.get("p1", "resp_1") == record
    await store.put(_record("resp_2", project_id="p2"))
    assert await store.delete("p1", "resp_1") is True
    assert await store.get("p1", "resp_1") is None
    assert await store.delete("p1", "resp_1") is False
    assert (await store.get("p2", "resp_2")) == _record("resp_2", project_id="p2")


async def test_the_sql_store_keeps_responses_per_project(sql_store: SqlResponseStore) -> None:
    await _check_scoped_by_project(sql_store)


async def test_the_memory_store_keeps_responses_per_project() -> None:
    await _check_scoped_by_project(InMemoryResponseStore())


async def test_the_memory_store_is_bounded() -> None:
    store = InMemoryResponseStore(capacity=3)
    for number in range(5):
        await store.put(_record(f"resp_{number}"))
    assert len(store) == 3
    assert await store.get("p1", "resp_0") is None
    assert await store.get("p1", "resp_4") is not None
