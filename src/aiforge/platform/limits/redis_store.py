"""Counters in Redis, shared by every gateway. Each operation is one Lua script call.

The scripts live next to this module (``lua/*.lua``) and mirror :class:`MemoryStore`
exactly; the retry-after arithmetic stays in Python (:mod:`.windows`), fed with what the
script saw. Keys of one request may span subjects, so this needs one Redis (or a cluster
where the key and its project hash to the same slot).
"""

from __future__ import annotations

import math
from importlib import resources
from typing import Any

import redis.asyncio as aioredis

from aiforge.platform.limits.store import Refusal, ReservationPlan, SettlePlan
from aiforge.platform.limits.windows import BUCKET_S, BUCKETS_PER_WINDOW

_PREFIX = "aiforge:limits:"
_WINDOW_TTL_MS = int((BUCKETS_PER_WINDOW + 2) * BUCKET_S * 1000)


def _script_text(name: str) -> str:
    return resources.files("aiforge.platform.limits").joinpath("lua", name).read_text("utf-8")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _ms(seconds: float) -> int:
    return math.ceil(seconds * 1000)


class RedisStore:
    """A :class:`~aiforge.platform.limits.store.Store` on Redis (atomic Lua scripts)."""

    persistent = True

    def __init__(self, client: aioredis.Redis) -> None:
        self._client = client
        self._reserve = client.register_script(_script_text("reserve.lua"))
        self._settle = client.register_script(_script_text("settle.lua"))
        self._renew = client.register_script(_script_text("renew.lua"))
        self._seed = client.register_script(_script_text("seed.lua"))

    @classmethod
    def from_url(cls, url: str, *, max_connections: int = 32) -> RedisStore:
        """A store with a bounded pool: a burst of requests queues for a connection (each
        script call takes microseconds) instead of opening one socket per request."""
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=10
        )
        return cls(aioredis.Redis.from_pool(pool))

    async def reserve(self, plan: ReservationPlan) -> Refusal | None:
        keys = [
            *(_PREFIX + w.key for w in plan.windows),
            *(_PREFIX + b.key for b in plan.budgets),
            *(_PREFIX + s.key for s in plan.slots),
        ]
        args: list[str | int] = [
            repr(plan.now), plan.now_index, BUCKETS_PER_WINDOW, _WINDOW_TTL_MS,
            len(plan.windows), len(plan.budgets), len(plan.slots),
            plan.slot_id, repr(plan.lease_until), _ms(plan.lease_until) + 1000,
        ]  # fmt: skip
        for w in plan.windows:
            args += [w.limit, plan.window_cost(w)]
        for b in plan.budgets:
            args += [b.limit, plan.tokens, _ms(b.expires_at)]
        args += [s.limit for s in plan.slots]
        kind, index, used, flat, extra = await self._reserve(keys=keys, args=args)
        if _text(kind) == "ok":
            return None
        buckets = {int(flat[i]): int(flat[i + 1]) for i in range(0, len(flat), 2)}
        next_expiry = float(_text(extra)) if _text(extra) else None
        return Refusal(_text(kind), int(index), int(used), buckets, next_expiry)

    async def settle(self, plan: SettlePlan) -> None:
        keys = [
            *(_PREFIX + key for key in plan.window_keys),
            *(_PREFIX + key for key in plan.budget_keys),
            *(_PREFIX + key for key in plan.slot_keys),
        ]
        args: list[str | int] = [
            len(plan.window_keys),
            len(plan.budget_keys),
            len(plan.slot_keys),
            plan.slot_id,
        ]
        for _ in plan.window_keys:
            args += [plan.now_index, plan.delta]
        args += [plan.delta] * len(plan.budget_keys)
        await self._settle(keys=keys, args=args)

    async def renew(self, slot_keys: tuple[str, ...], slot_id: str, lease_until: float) -> None:
        if not slot_keys:
            return
        keys = [_PREFIX + key for key in slot_keys]
        await self._renew(keys=keys, args=[slot_id, repr(lease_until), _ms(lease_until) + 1000])

    async def seed_budget(self, key: str, used: int, expires_at: float) -> None:
        await self._seed(keys=[_PREFIX + key], args=[used, _ms(expires_at)])

    async def aclose(self) -> None:
        await self._client.aclose()
