"""Keeps the replica table's states true: probes each replica's health endpoint.

A replica whose process has exited is ``dead``; one that stops answering is ``unhealthy``
and comes back to ``ready`` as soon as it answers again (a replica the gateway merely
attached to by URL can restart behind its back). The monitor runs beside the gateway,
never on the request path.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping

import httpx

from aiforge.cluster.replicas import Replica, ReplicaState, ReplicaTable

Liveness = Callable[[], bool]


class ReplicaHealthMonitor:
    """Probes every replica each ``interval_s`` seconds and updates the table."""

    def __init__(
        self,
        table: ReplicaTable,
        *,
        interval_s: float = 2.0,
        probe_timeout_s: float = 2.0,
        health_path: str = "/health",
        liveness: Mapping[str, Liveness] | None = None,
    ) -> None:
        self.table = table
        self.interval_s = interval_s
        self.probe_timeout_s = probe_timeout_s
        self.health_path = health_path
        self.liveness: dict[str, Liveness] = dict(liveness or {})

    async def check_once(self, client: httpx.AsyncClient) -> None:
        replicas = [r for r in self.table if r.state != ReplicaState.STOPPED]
        await asyncio.gather(*(self._check(client, r) for r in replicas))

    async def run(self, client: httpx.AsyncClient) -> None:
        """Probe forever (cancel the task to stop)."""
        while True:
            with contextlib.suppress(Exception):
                await self.check_once(client)
            await asyncio.sleep(self.interval_s)

    async def _check(self, client: httpx.AsyncClient, replica: Replica) -> None:
        alive = self.liveness.get(replica.id)
        if alive is not None and not alive():
            if replica.state != ReplicaState.DEAD:
                self.table.set_state(replica.id, ReplicaState.DEAD, error="process exited")
            return
        try:
            response = await client.get(
                replica.url.rstrip("/") + self.health_path, timeout=self.probe_timeout_s
            )
            healthy, error = response.status_code == 200, f"health {response.status_code}"
        except httpx.HTTPError as exc:
            healthy, error = False, f"{type(exc).__name__}: {exc}"
        if healthy and replica.state != ReplicaState.READY:
            self.table.set_state(replica.id, ReplicaState.READY)
        elif not healthy and replica.state == ReplicaState.READY:
            self.table.set_state(replica.id, ReplicaState.UNHEALTHY, error=error)
