"""The runtime seam: how replica processes are started, probed and stopped.

The controller decides *what* should run; a :class:`Runtime` makes it so on some
substrate — local subprocesses (:mod:`aiforge.cluster.runtimes.local`, the embedded
default) or Ray actors across nodes (next). Every method is idempotent where it can be:
stopping a replica that is gone is not an error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from aiforge.cluster.deployments import DeploymentSpec

__all__ = ["ProgressCallback", "ReplicaProbe", "ReplicaStartError", "RunningReplica", "Runtime"]

ProgressCallback = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class RunningReplica:
    """A replica process the runtime started (it may not be healthy yet)."""

    replica_id: str
    deployment: str
    url: str
    """Base URL of its OpenAI endpoints, without ``/v1``."""
    engine: str
    dialect: str
    """The engine's answer dialect (:mod:`aiforge.gateway.dialects`)."""
    node: str = "local"
    pid: int | None = None
    startup_timeout_s: float | None = None
    """How long it may take to answer health checks; None: the controller's default."""


class ReplicaStartError(RuntimeError):
    """A replica could not be started (model not found, engine unavailable, process failed to
    spawn); the message says why in words a user can act on."""


@dataclass(frozen=True, slots=True)
class ReplicaProbe:
    """One look at a replica."""

    alive: bool
    """Its process (or actor) exists."""
    healthy: bool
    """Its health endpoint answered 200."""
    exit_code: int | None = None
    detail: str = ""
    """Why not healthy (HTTP status, connection error, exit code)."""


class Runtime(Protocol):
    name: str

    async def start(
        self, replica_id: str, spec: DeploymentSpec, progress: ProgressCallback
    ) -> RunningReplica:
        """Prepare (resolve the model, pick and prepare the engine) and spawn one replica of
        ``spec``; return once the process runs, not when it is healthy. Raises
        :class:`ReplicaStartError` with a readable reason when it cannot start."""

    async def stop(self, replica_id: str, *, grace_s: float) -> None:
        """Stop the replica (SIGTERM, then SIGKILL after ``grace_s``); no-op if gone."""

    def list(self) -> list[RunningReplica]:
        """Replicas this runtime started and has not stopped."""

    async def probe(self, replica_id: str) -> ReplicaProbe:
        """Is it alive, is it healthy? Never raises for an unreachable replica."""

    def log_tail(self, replica_id: str, lines: int = 25) -> str:
        """Its last log lines (for a failed replica's ``last_error``)."""

    async def aclose(self) -> None:
        """Stop everything still running and release resources."""
