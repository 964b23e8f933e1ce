"""The key cache: answers from memory, honours expiry by the clock, reloads on change."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from aiforge.config import Settings
from aiforge.platform.api.schemas import ApiKeyCreate
from aiforge.platform.bootstrap import build_platform
from aiforge.platform.domain.key_record import KeyRecord
from aiforge.platform.domain.keys import hash_token
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


class RecordingKeys(dict[str, KeyRecord]):
    """The snapshot's key table, recording what it was asked for."""

    def __init__(self, keys: dict[str, KeyRecord]) -> None:
        super().__init__(keys)
        self.asked: list[str] = []

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.append(key)
        return super().get(key, default)


async def test_keys_are_found_by_the_keyed_hash_of_the_whole_token_never_by_its_prefix(
    database_url: str, tmp_path: Path
) -> None:
    """Looking a key up by the prefix a token claims makes a refusal faster when no key has
    that prefix: timing tells an attacker which prefixes exist. The whole token is hashed
    first, and only the hash is looked up."""
    runtime = build_platform(Settings(data_dir=tmp_path, database_url=database_url))
    await runtime.start()
    try:
        assert runtime.new_admin_key is not None
        assert runtime.default is not None
        admin = runtime.authenticator.authenticate(f"Bearer {runtime.new_admin_key}")
        row, token = runtime.keys.create_key(admin, runtime.default.project_id, ApiKeyCreate())
        cache = PlatformAuthenticator(runtime.sessions, refresh_interval_s=0)
        cache.reload()
        keys = RecordingKeys(cache._snapshot.keys)
        cache._snapshot = dataclasses.replace(cache._snapshot, keys=keys)
        forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")

        assert cache.authenticate(f"Bearer {token}").key_id == row.id
        with pytest.raises(AuthError) as refused:
            cache.authenticate(f"Bearer {forged}")
        with pytest.raises(AuthError) as unknown:
            cache.authenticate("Bearer sk-af-zzzzzzzzzzzz_" + "A" * 43)

        assert refused.value.code == unknown.value.code
        assert keys.asked == [
            hash_token(token),
            hash_token(forged),
            hash_token("sk-af-zzzzzzzzzzzz_" + "A" * 43),
        ]
        assert row.prefix not in keys.asked
    finally:
        await runtime.stop()
