"""Storage: SQLAlchemy tables, engines for SQLite and PostgreSQL, Alembic migrations."""

from aiforge.platform.db.base import Base, UtcDateTime
from aiforge.platform.db.engine import make_engine, make_sessionmaker
from aiforge.platform.db.migrate import upgrade_to_head

__all__ = ["Base", "UtcDateTime", "make_engine", "make_sessionmaker", "upgrade_to_head"]
