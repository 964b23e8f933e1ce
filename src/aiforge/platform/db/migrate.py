"""Run the packaged Alembic migrations programmatically (no repo-root ``alembic.ini``).

Several gateways may start at once against one database; migrations are serialized with
a PostgreSQL advisory lock, or a file lock next to a SQLite database, so the second one
finds the schema already at head instead of racing the first.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, make_url, text

from aiforge.platform.db.engine import make_engine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_PG_MIGRATION_LOCK = 0x6A1F0E  # arbitrary, constant: one advisory lock id for aiforge migrations


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config pointing at the packaged migrations."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision() -> str:
    """The newest revision shipped with this aiforge."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError("aiforge ships no migrations")
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade_to_head(url: str, *, engine: Engine | None = None) -> None:
    """Bring the database at ``url`` to the newest schema. Idempotent and safe to race."""
    owned = engine is None
    db = engine if engine is not None else make_engine(url)
    try:
        with _migration_lock(db, url), db.connect() as connection:
            _upgrade(connection)
    finally:
        if owned:
            db.dispose()


def _upgrade(connection: Connection) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")
    connection.commit()


@contextmanager
def _migration_lock(engine: Engine, url: str) -> Iterator[None]:
    backend = make_url(url).get_backend_name()
    if backend == "postgresql":
        with engine.connect() as lock_connection:
            lock_connection.execute(
                text("SELECT pg_advisory_lock(:id)"), {"id": _PG_MIGRATION_LOCK}
            )
            try:
                yield
            finally:
                lock_connection.execute(
                    text("SELECT pg_advisory_unlock(:id)"), {"id": _PG_MIGRATION_LOCK}
                )
                lock_connection.commit()
        return
    database = make_url(url).database if backend == "sqlite" else None
    if not database or database == ":memory:" or database.startswith("file:"):
        yield
        return
    lock_path = Path(database).with_name(Path(database).name + ".migrate.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
