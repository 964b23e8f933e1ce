"""Case-folded unique names, keys looked up by their hash, 64-bit limits.

* ``organizations.name_key``, ``projects.name_key`` (unique per organization) and
  ``users.email_key``: the NFKC case-folded name (:func:`aiforge.platform.domain.names.name_key`),
  unique, so names differing only by case or width cannot coexist. Existing rows are
  backfilled; where two existing names already clash, the later one's key gets its id
  appended (both keep working; neither can be duplicated again).
* ``api_keys.secret_hash`` gets a unique index: the key cache and the admin key's adoption
  look keys up by the keyed hash of the whole token. The stored hash is unchanged
  (HMAC-SHA256 of the whole token already), so every existing key keeps working.
* The limits columns become 64-bit.

Revision ID: 0004_name_keys
Revises: 0003_deployments
Create Date: 2025-01-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from aiforge.platform.domain.names import name_key

revision: str = "0004_name_keys"
down_revision: str | None = "0003_deployments"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEY_LENGTH = 1024
LIMIT_COLUMNS = (
    "requests_per_minute",
    "tokens_per_minute",
    "max_concurrent",
    "tokens_per_day",
    "tokens_per_month",
)


def _add_key_column(table: str, column: str, source: str, scope: str | None) -> None:
    """Add ``column`` (NOT NULL) and fill it with the key of ``source`` for every row."""
    op.add_column(
        table, sa.Column(column, sa.String(KEY_LENGTH), nullable=False, server_default="")
    )
    bind = op.get_bind()
    rows = sa.table(table, sa.column("id"), sa.column(source), sa.column(column))
    scope_sql = f", {scope}" if scope else ""
    query = sa.text(f"SELECT id, {source}{scope_sql} FROM {table} ORDER BY created_at, id")
    taken: set[tuple[str, str]] = set()
    for row in bind.execute(query).all():
        key = name_key(row[1])
        scope_value = str(row[2]) if scope else ""
        if (scope_value, key) in taken:
            key = f"{key} #{row[0]}"
        taken.add((scope_value, key))
        bind.execute(rows.update().where(rows.c.id == row[0]).values({column: key}))
    if bind.dialect.name != "sqlite":  # SQLite cannot drop a default without a table rebuild
        op.alter_column(table, column, server_default=None)


def upgrade() -> None:
    _add_key_column("organizations", "name_key", "name", None)
    op.create_index(op.f("ix_organizations_name_key"), "organizations", ["name_key"], unique=True)
    _add_key_column("projects", "name_key", "name", "organization_id")
    op.create_index(
        "ix_projects_org_name_key", "projects", ["organization_id", "name_key"], unique=True
    )
    _add_key_column("users", "email_key", "email", None)
    op.create_index(op.f("ix_users_email_key"), "users", ["email_key"], unique=True)
    op.create_index(op.f("ix_api_keys_secret_hash"), "api_keys", ["secret_hash"], unique=True)
    for table in ("key_limits", "project_limits"):
        # Leaf tables (nothing references them), so SQLite's table rebuild is safe.
        with op.batch_alter_table(table) as batch:
            for name in LIMIT_COLUMNS:
                batch.alter_column(
                    name, type_=sa.BigInteger(), existing_type=sa.Integer(), existing_nullable=True
                )


def downgrade() -> None:
    for table in ("key_limits", "project_limits"):
        with op.batch_alter_table(table) as batch:
            for name in LIMIT_COLUMNS:
                batch.alter_column(
                    name, type_=sa.Integer(), existing_type=sa.BigInteger(), existing_nullable=True
                )
    op.drop_index(op.f("ix_api_keys_secret_hash"), table_name="api_keys")
    op.drop_index(op.f("ix_users_email_key"), table_name="users")
    op.drop_index("ix_projects_org_name_key", table_name="projects")
    op.drop_index(op.f("ix_organizations_name_key"), table_name="organizations")
    # Plain ALTER TABLE ... DROP COLUMN (SQLite >= 3.35): a batch rebuild of these tables
    # would cascade-delete the rows that reference them.
    op.drop_column("users", "email_key")
    op.drop_column("projects", "name_key")
    op.drop_column("organizations", "name_key")
