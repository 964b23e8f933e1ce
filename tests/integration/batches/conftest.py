"""A migrated database (SQLite and PostgreSQL) with the files and batches services over it,
and a scriptable stand-in for the gateway's handler (the runner's one collaborator)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from batches_support import Platform, build

from aiforge.platform.db.engine import make_engine


@pytest.fixture
def platform(database_url: str, tmp_path: Path) -> Iterator[Platform]:
    engine = make_engine(database_url)
    try:
        yield build(engine, database_url, tmp_path)
    finally:
        engine.dispose()
