"""Alembic environment: runs on the connection ``upgrade_to_head`` hands over.

``config.attributes["connection"]`` is set by :func:`aiforge.platform.db.migrate.upgrade_to_head`
(the normal path); the ``sqlalchemy.url`` option serves a developer running alembic by hand.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from aiforge.platform.db.engine import make_engine
from aiforge.platform.db.tables import load_all_tables

target_metadata = load_all_tables()


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no connection and no sqlalchemy.url for the aiforge migrations")
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            _run(connection)
    finally:
        engine.dispose()


run_migrations_online()
