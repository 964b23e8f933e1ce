"""Fixtures for integration tests against real services.

* ``postgres_url`` / ``redis_url``: the servers ``scripts/services start`` runs
  (``AIFORGE_TEST_POSTGRES_URL``, ``AIFORGE_TEST_REDIS_URL``). Missing: the test is
  skipped — unless ``CI`` is set, where a missing service is a failure, not a skip.
* ``database_url``: parametrized over ``sqlite`` and ``postgres``; every test gets a fresh,
  empty database (a new SQLite file, or a new PostgreSQL database dropped afterwards).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import make_url, text

from aiforge.platform.db.engine import make_engine


def _service_url(variable: str) -> str:
    url = os.environ.get(variable)
    if url:
        return url
    message = f'{variable} is not set (run: eval "$(scripts/services start)")'
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The PostgreSQL server's URL (its maintenance database)."""
    return _service_url("AIFORGE_TEST_POSTGRES_URL")


@pytest.fixture(scope="session")
def redis_url() -> str:
    return _service_url("AIFORGE_TEST_REDIS_URL")


def _fresh_postgres_database(server_url: str) -> Iterator[str]:
    name = f"aiforge_test_{uuid.uuid4().hex[:12]}"
    admin = make_engine(server_url).execution_options(isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database on each backend (no schema: migrations create it)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'aiforge.db'}"
        return
    server_url: str = request.getfixturevalue("postgres_url")
    yield from _fresh_postgres_database(server_url)
