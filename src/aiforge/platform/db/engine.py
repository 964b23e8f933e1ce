"""Database engines: SQLite (the embedded default) and PostgreSQL (production).

SQLite is tuned for a service that several threads (and, in tests, several gateway
processes) write to: WAL so readers never block the writer, ``synchronous=NORMAL`` (durable
at every checkpoint, safe with WAL), foreign keys enforced, and a busy timeout instead of
an immediate "database is locked".

The SQLite file holds every key's hash and every tenant's usage: it is created 0600, in a
directory created 0700 (like the admin key file), and an existing file readable by others
is narrowed to 0600 (SQLite gives its ``-wal`` and ``-shm`` files the database's mode).
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.orm import Session, sessionmaker

logger = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 30_000
PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700


def make_engine(url: str) -> Engine:
    """Create an engine for ``url``.

    ``postgresql://`` URLs use the psycopg (v3) driver; ``sqlite:///path`` creates the
    parent directory of the file if needed.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        return create_engine(parsed, pool_pre_ping=True, future=True)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed.render_as_string(hide_password=False))
    return create_engine(parsed, pool_pre_ping=True)


def _sqlite_engine(url: str) -> Engine:
    parsed = make_url(url)
    database = parsed.database
    if database and database != ":memory:" and not database.startswith("file:"):
        prepare_private_file(Path(database))
    engine = create_engine(
        parsed,
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
    )
    event.listen(engine, "connect", _configure_sqlite_connection)
    return engine


def prepare_private_file(path: Path) -> None:
    """Make ``path`` exist, owner-only: its directory created 0700 if missing, the file
    created 0600 (before SQLite creates it with the umask's mode) or narrowed to 0600."""
    if not path.parent.exists():
        path.parent.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE_MODE))
    for companion in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        narrow_mode(companion, PRIVATE_FILE_MODE)


def narrow_mode(path: Path, mode: int) -> None:
    """Take away any permission ``path`` has beyond ``mode`` (missing or not ours: leave it)."""
    try:
        current = stat.S_IMODE(path.stat().st_mode)
        if current & ~mode:
            os.chmod(path, current & mode)
            logger.info("narrowed %s from %o to %o", path, current, current & mode)
    except OSError:
        return


def _configure_sqlite_connection(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    finally:
        cursor.close()


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded attributes after commit (they are returned to callers)."""
    return sessionmaker(bind=engine, expire_on_commit=False)
