"""Migration 0004 on a database with data: names get case-folded keys, keys keep working."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from aiforge.config import Settings
from aiforge.platform.bootstrap import build_platform
from aiforge.platform.db.engine import make_engine
from aiforge.platform.db.migrate import alembic_config
from aiforge.platform.domain.keys import issue_key


def _at_0003_with_data(database_url: str) -> str:
    """A database at revision 0003 holding names that clash once case-folded, and a key."""
    engine = make_engine(database_url)
    issued = issue_key()
    now = datetime(2025, 1, 1, tzinfo=UTC).isoformat()
    try:
        with engine.begin() as connection:
            config = alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, "0003_deployments")
            statements = [
                "INSERT INTO organizations (id, name, created_at) VALUES "
                "('org_a', 'Acme', :t), ('org_b', 'ACME', :t)",
                "INSERT INTO projects (id, organization_id, name, created_at) VALUES "
                "('proj_a', 'org_a', 'Web', :t), ('proj_b', 'org_a', 'web', :t)",
                "INSERT INTO users (id, email, name, created_at) VALUES "
                "('user_a', 'ann@example.com', '', :t), ('user_b', 'Ann@Example.com', '', :t)",
                "INSERT INTO api_keys (id, project_id, name, prefix, secret_hash, role, "
                "is_platform_admin, created_at) VALUES ('key_a', 'proj_a', 'old', :prefix, "
                ":hash, 'owner', true, :t)",
                "INSERT INTO key_limits (key_id, tokens_per_month) VALUES ('key_a', 2000)",
            ]
            for statement in statements:
                connection.execute(
                    text(statement),
                    {"t": now, "prefix": issued.prefix, "hash": issued.secret_hash},
                )
    finally:
        engine.dispose()
    return issued.token


async def test_0004_backfills_name_keys_and_existing_keys_still_authenticate(
    database_url: str, tmp_path: Path
) -> None:
    token = _at_0003_with_data(database_url)
    runtime = build_platform(Settings(data_dir=tmp_path / "data", database_url=database_url))
    await runtime.start()  # migrates to head
    try:
        principal = runtime.authenticator.authenticate(f"Bearer {token}")
        assert principal.key_id == "key_a"
        limits = runtime.keys.get_key_limits(principal, "key_a")
        assert limits.tokens_per_month == 2000
        with runtime.engine.connect() as connection:
            orgs: dict[str, str] = dict(
                connection.execute(text("SELECT id, name_key FROM organizations")).all()
            )
            users: dict[str, str] = dict(
                connection.execute(text("SELECT id, email_key FROM users")).all()
            )
        assert orgs["org_a"] == "acme"
        assert orgs["org_b"] == "acme #org_b"  # both keep working; neither can be copied again
        assert users["user_a"] == "ann@example.com"
        assert users["user_b"] == "ann@example.com #user_b"
        with pytest.raises(IntegrityError), runtime.engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO organizations (id, name, name_key, created_at) "
                    "VALUES ('org_c', 'aCmE', 'acme', :t)"
                ),
                {"t": datetime.now(UTC).isoformat()},
            )
    finally:
        await runtime.stop()
