"""A migrated database (SQLite, and PostgreSQL when it runs) for the ledger's tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from aiforge.platform.db.engine import make_engine
from aiforge.platform.db.migrate import upgrade_to_head


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    upgrade_to_head(database_url)
    db = make_engine(database_url)
    yield db
    db.dispose()
