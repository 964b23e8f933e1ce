"""Migration 0003: the ``deployments`` table exactly as declared, and its downgrade."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from aiforge.platform.db.engine import make_engine
from aiforge.platform.db.migrate import (
    alembic_config,
    current_revision,
    head_revision,
    upgrade_to_head,
)
from aiforge.platform.db.tables import load_all_tables


def test_0003_creates_the_declared_deployments_table_and_downgrades(database_url: str) -> None:
    upgrade_to_head(database_url)
    engine = make_engine(database_url)
    try:
        assert current_revision(engine) == head_revision()
        with engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), load_all_tables())
        assert diff == []
        assert "deployments" in inspect(engine).get_table_names()

        config = alembic_config()
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "0002_usage_records")
        tables = set(inspect(engine).get_table_names())
        assert "deployments" not in tables
        assert {"usage_records", "api_keys"} <= tables
    finally:
        engine.dispose()
    upgrade_to_head(database_url)  # and back up again
    engine = make_engine(database_url)
    try:
        assert "deployments" in inspect(engine).get_table_names()
    finally:
        engine.dispose()
