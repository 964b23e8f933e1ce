"""A scripted :class:`~aiforge.cluster.runtimes.base.Runtime` and endpoint prober, for testing
the controller (and anything built on it) without processes, plus a settable clock.

:class:`FakeRuntime` "starts" a replica by recording it; the test decides what happens next:
whether it is healthy (:meth:`FakeRuntime.set_healthy`), crashes (:meth:`FakeRuntime.crash`),
fails to start (``start_errors``) or takes its time (``start_gate``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiforge.cluster.deployments import DeploymentSpec
from aiforge.cluster.runtimes.base import (
    ProgressCallback,
    ReplicaProbe,
    ReplicaStartError,
    RunningReplica,
)

__all__ = ["FakeClock", "FakeEndpointProber", "FakeRuntime"]


@dataclass
class FakeClock:
    """A clock that moves only when told (``clock()`` reads it)."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


@dataclass
class FakeRuntime:
    """Replicas as records. New replicas are healthy unless ``healthy_on_start`` is False."""

    name: str = "fake"
    engine: str = "fake"
    dialect: str = "openai"
    healthy_on_start: bool = True
    startup_timeout_s: float | None = None
    start_errors: dict[str, str] = field(default_factory=dict)
    """Deployment name → the :class:`ReplicaStartError` message its starts raise."""
    start_gate: asyncio.Event | None = None
    """When set, starts wait for it (a model download that takes a while)."""
    logs: dict[str, str] = field(default_factory=dict)
    start_calls: list[str] = field(default_factory=list)
    stop_calls: list[str] = field(default_factory=list)
    _running: dict[str, RunningReplica] = field(default_factory=dict)
    _healthy: dict[str, bool] = field(default_factory=dict)
    _exits: dict[str, int] = field(default_factory=dict)
    _next_pid: int = 4000

    async def start(
        self, replica_id: str, spec: DeploymentSpec, progress: ProgressCallback
    ) -> RunningReplica:
        self.start_calls.append(replica_id)
        if self.start_gate is not None:
            await self.start_gate.wait()
        error = self.start_errors.get(spec.name)
        if error is not None:
            raise ReplicaStartError(error)
        self._next_pid += 1
        running = RunningReplica(
            replica_id=replica_id, deployment=spec.name, url=f"http://{replica_id}.fake",
            engine=self.engine, dialect=self.dialect, pid=self._next_pid,
            startup_timeout_s=self.startup_timeout_s,
        )  # fmt: skip
        self._running[replica_id] = running
        self._healthy[replica_id] = self.healthy_on_start
        self._exits.pop(replica_id, None)
        return running

    async def stop(self, replica_id: str, *, grace_s: float) -> None:
        self.stop_calls.append(replica_id)
        self._running.pop(replica_id, None)
        self._exits.pop(replica_id, None)

    async def probe(self, replica_id: str) -> ReplicaProbe:
        if replica_id in self._exits:
            code = self._exits[replica_id]
            return ReplicaProbe(alive=False, healthy=False, exit_code=code, detail=f"exit {code}")
        if replica_id not in self._running:
            return ReplicaProbe(alive=False, healthy=False, detail="not running")
        healthy = self._healthy.get(replica_id, False)
        return ReplicaProbe(alive=True, healthy=healthy, detail="" if healthy else "health 503")

    def log_tail(self, replica_id: str, lines: int = 25) -> str:
        return "\n".join(self.logs.get(replica_id, "").splitlines()[-lines:])

    async def aclose(self) -> None:
        for replica_id in list(self._running):
            await self.stop(replica_id, grace_s=0.0)

    # -- what the test scripts ------------------------------------------------------------

    def set_healthy(self, replica_id: str, healthy: bool = True) -> None:
        self._healthy[replica_id] = healthy

    def crash(self, replica_id: str, exit_code: int = -9, log: str = "") -> None:
        """The replica's process exits (it stays listed until stopped, as a real one)."""
        self._exits[replica_id] = exit_code
        if log:
            self.logs[replica_id] = self.logs.get(replica_id, "") + log

    def running_ids(self) -> list[str]:
        return sorted(self._running)

    def list(self) -> list[RunningReplica]:
        return list(self._running.values())


class FakeEndpointProber:
    """External endpoints by URL: healthy unless listed in ``down``."""

    def __init__(self) -> None:
        self.down: set[str] = set()
        self.probed: list[str] = []
        self.context_lengths: dict[str, int] = {}
        """What each URL reports as its context length (absent: nothing)."""

    async def probe(self, url: str) -> ReplicaProbe:
        self.probed.append(url)
        if url in self.down:
            return ReplicaProbe(alive=False, healthy=False, detail="ConnectError")
        return ReplicaProbe(alive=True, healthy=True)

    async def context_length(self, url: str) -> int | None:
        return self.context_lengths.get(url)

    async def aclose(self) -> None:
        pass
