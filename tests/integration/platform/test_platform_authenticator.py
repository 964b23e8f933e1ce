"""The key cache: answers from memory, honours expiry by the clock, reloads on change."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from aiforge.config import Settings
from aiforge.platform.api.schemas import ApiKeyCreate
from aiforge.platform.bootstrap import build_platform
from aiforge.platform.services.authenticator import PlatformAuthenticator
from aiforge.types import AuthError


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def _no_database(*_args: Any, **_kwargs: Any) -> Any:
    raise AssertionError("the request path touched the database")


async def test_the_cache_answers_from_memory_and_expires_keys_by_the_clock(
    database_url: str, tmp_path: Path
) -> None:
    runtime = build_platform(Settings(data_dir=tmp_path, database_url=database_url))
    await runtime.start()
    try:
        assert runtime.new_admin_key is not None
        assert runtime.default is not None
        admin = runtime.authenticator.authenticate(f"Bearer {runtime.new_admin_key}")
        clock = FakeClock()
        expires = clock.now + timedelta(hours=1)
        row, token = runtime.keys.create_key(
            admin, runtime.default.project_id, ApiKeyCreate(expires_at=expires)
        )
        cache = PlatformAuthenticator(runtime.sessions, clock=clock, refresh_interval_s=0)
        cache.reload()
        assert cache.refresh_if_changed() is False

        cache._sessions = _no_database  # type: ignore[assignment]
        assert cache.authenticate(f"Bearer {token}").key_id == row.id
        clock.now = expires
        with pytest.raises(AuthError) as refused:
            cache.authenticate(f"Bearer {token}")
        assert refused.value.code == "expired_api_key"
        with pytest.raises(AuthError) as missing:
            cache.authenticate(None)
        assert missing.value.code == "missing_api_key"

        cache._sessions = runtime.sessions
        runtime.keys.revoke_key(admin, row.id)
        assert cache.refresh_if_changed() is True
        assert cache.refresh_if_changed() is False
    finally:
        await runtime.stop()
