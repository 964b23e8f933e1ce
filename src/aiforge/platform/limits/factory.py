"""Pick the counter store for a deployment: Redis when configured, else this process."""

from __future__ import annotations

from aiforge.config import Settings
from aiforge.platform.limits.redis_store import RedisStore
from aiforge.platform.limits.store import MemoryStore, Store


def build_store(settings: Settings) -> Store:
    """``RedisStore`` when ``AIFORGE_REDIS_URL`` is set (shared by every gateway), else memory."""
    if settings.redis_url:
        return RedisStore.from_url(settings.redis_url)
    return MemoryStore()
