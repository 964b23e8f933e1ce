"""The batch insert: every column stored as SQLAlchemy would, and exact counts of rows written."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from aiforge.platform.db.base import Base
from aiforge.platform.db.engine import make_engine
from aiforge.platform.metering import UsageRecordRow
from aiforge.platform.metering.rows import COLUMNS, event_row, insert_records
from aiforge.types import GATEWAY_CRASHED

STARTED = datetime(2025, 5, 1, 23, 59, 59, 123456, tzinfo=UTC)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    db = make_engine(f"sqlite:///{tmp_path / 'usage.db'}")
    Base.metadata.create_all(db, tables=[UsageRecordRow.__table__])  # type: ignore[list-item]
    yield db
    db.dispose()


def record(request_id: str, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "request_id": request_id,
        "key_id": "k1",
        "project_id": "p1",
        "organization_id": "o1",
        "model": "qwen",
        "kind": "chat",
        "status_code": 200,
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "cached_tokens": 2,
        "deployment": "d",
        "replica": "r",
        "ttft_ms": 1.5,
        "latency_ms": 9.25,
        "stream": True,
        "cancelled": False,
        "error_type": None,
        "started_at": STARTED.timestamp(),
    }
    values.update(overrides)
    return values


def stored(engine: Engine) -> dict[str, dict[str, Any]]:
    with engine.connect() as connection:
        result = connection.execute(select(UsageRecordRow.__table__)).mappings()
        return {row["request_id"]: dict(row) for row in result}


def test_the_columns_are_every_column_of_the_table_but_its_id() -> None:
    table = [c.name for c in UsageRecordRow.__table__.columns if c.name != "id"]
    assert sorted(COLUMNS) == sorted(table)


def test_every_value_is_stored_as_the_orm_would_store_it(engine: Engine) -> None:
    with engine.begin() as connection:
        assert insert_records(connection, [record("r1"), record("r2", ttft_ms=None)]) == 2
    rows = stored(engine)
    first = rows["r1"]
    del first["id"]
    assert first == {
        **event_row(record("r1")),
        "started_at": STARTED,
        "day": date(2025, 5, 1),
        "total_tokens": 15,
    }
    assert first["started_at"].tzinfo is not None
    assert rows["r2"]["ttft_ms"] is None
    assert (rows["r1"]["stream"], rows["r1"]["cancelled"]) == (True, False)


def test_counts_only_rows_written(engine: Engine) -> None:
    crashed = record("r1", status_code=502, completion_tokens=0, error_type=GATEWAY_CRASHED)
    with engine.begin() as connection:
        assert insert_records(connection, [], [crashed, crashed]) == 1
        assert insert_records(connection, [record("r2")], [record("r2")]) == 1
    with engine.begin() as connection:
        # A real record replaces the placeholder (1); a repeat or a placeholder over a real
        # record writes nothing.
        assert insert_records(connection, [record("r1"), record("r2")], [crashed]) == 1
        assert insert_records(connection, [], [record("r1", error_type=GATEWAY_CRASHED)]) == 0
    rows = stored(engine)
    assert (rows["r1"]["status_code"], rows["r1"]["error_type"]) == (200, None)
    assert len(rows) == 2
