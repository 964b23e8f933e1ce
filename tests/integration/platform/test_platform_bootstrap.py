"""First start, restarts, AIFORGE_ADMIN_KEY, several gateways on one database, migrations."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, inspect, select

from aiforge.config import Settings
from aiforge.platform.api.schemas import ApiKeyCreate
from aiforge.platform.bootstrap import PlatformRuntime, build_platform
from aiforge.platform.db.engine import make_engine
from aiforge.platform.db.migrate import (
    alembic_config,
    current_revision,
    head_revision,
    upgrade_to_head,
)
from aiforge.platform.db.tables import load_all_tables
from aiforge.platform.db.tenancy import OrganizationRow
from aiforge.types import AuthError

CONFIGURED_KEY = "automation-admin-key-0123456789"


def bearer(token: str) -> str:
    return f"Bearer {token}"


async def started(settings: Settings) -> PlatformRuntime:
    runtime = build_platform(settings)
    await runtime.start()
    return runtime


async def test_first_start_creates_an_admin_key_once_readable_by_the_owner_only(
    database_url: str, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url)
    first = await started(settings)
    try:
        token = first.new_admin_key
        assert token is not None
        assert first.admin_key_file.read_text().strip() == token
        assert stat.S_IMODE(first.admin_key_file.stat().st_mode) == 0o600
        principal = first.authenticator.authenticate(bearer(token))
        assert principal.is_platform_admin
        assert first.default is not None
        assert principal.project_id == first.default.project_id
    finally:
        await first.stop()

    second = await started(settings)
    try:
        assert second.new_admin_key is None
        second.authenticator.authenticate(bearer(token))
        assert second.default == first.default
    finally:
        await second.stop()


async def test_aiforge_admin_key_sets_the_key_and_rotating_it_revokes_the_old_one(
    database_url: str, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url)
    runtime = await started(settings.model_copy(update={"admin_key": CONFIGURED_KEY}))
    try:
        assert runtime.new_admin_key is None
        assert not runtime.admin_key_file.exists()
        assert runtime.authenticator.authenticate(bearer(CONFIGURED_KEY)).is_platform_admin
    finally:
        await runtime.stop()

    rotated = CONFIGURED_KEY + "-rotated"
    runtime = await started(settings.model_copy(update={"admin_key": rotated}))
    try:
        assert runtime.authenticator.authenticate(bearer(rotated)).is_platform_admin
        with pytest.raises(AuthError):
            runtime.authenticator.authenticate(bearer(CONFIGURED_KEY))
    finally:
        await runtime.stop()


async def test_three_gateways_start_together_on_one_database(
    database_url: str, tmp_path: Path
) -> None:
    runtimes = [
        build_platform(
            Settings(
                data_dir=tmp_path / f"gateway-{n}",
                database_url=database_url,
                admin_key=CONFIGURED_KEY,
            )
        )
        for n in range(3)
    ]
    await asyncio.gather(*(runtime.start() for runtime in runtimes))
    try:
        defaults = {runtime.default for runtime in runtimes}
        assert len(defaults) == 1
        for runtime in runtimes:
            runtime.authenticator.authenticate(bearer(CONFIGURED_KEY))
        with runtimes[0].sessions() as session:
            count = session.scalar(select(func.count()).select_from(OrganizationRow))
        assert count == 1
    finally:
        await asyncio.gather(*(runtime.stop() for runtime in runtimes))


async def test_a_key_created_on_one_gateway_works_on_another_within_the_refresh(
    database_url: str, tmp_path: Path
) -> None:
    one = await started(Settings(data_dir=tmp_path / "one", database_url=database_url))
    other = await started(Settings(data_dir=tmp_path / "other", database_url=database_url))
    try:
        assert one.new_admin_key is not None
        admin = one.authenticator.authenticate(bearer(one.new_admin_key))
        assert one.default is not None
        row, token = one.keys.create_key(admin, one.default.project_id, ApiKeyCreate(name="x"))
        one.authenticator.authenticate(bearer(token))  # this process: at once

        await _eventually(lambda: other.authenticator.authenticate(bearer(token)))

        one.keys.revoke_key(admin, row.id)
        with pytest.raises(AuthError):
            one.authenticator.authenticate(bearer(token))

        def refused() -> None:
            with pytest.raises(AuthError):
                other.authenticator.authenticate(bearer(token))

        await _eventually(refused)
    finally:
        await one.stop()
        await other.stop()


async def _eventually(check: object, timeout_s: float = 5.0) -> None:
    """Retry ``check`` until it passes (the other gateway polls every second)."""
    assert callable(check)
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            check()
            return
        except (AuthError, AssertionError, pytest.fail.Exception):
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.1)


def test_migrations_build_exactly_the_declared_schema_and_downgrade(database_url: str) -> None:
    upgrade_to_head(database_url)
    upgrade_to_head(database_url)  # idempotent
    engine = make_engine(database_url)
    try:
        assert current_revision(engine) == head_revision()
        with engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), load_all_tables())
        assert diff == []
        config = alembic_config()
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "base")
        tables = set(inspect(engine).get_table_names()) - {"alembic_version"}
        assert tables == set()
    finally:
        engine.dispose()
