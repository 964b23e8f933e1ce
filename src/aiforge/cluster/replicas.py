"""Replicas as the controller sees them: one record per replica, with its lifecycle state.

States::

    pending ─▶ starting ─▶ ready ─▶ draining ─▶ stopped
       ▲           │         │ ▲
       │           ▼         ▼ │
       └──(backoff)── crashed  unhealthy          failed (crashed too often; kept, not restarted)

* ``pending``: wanted, no process yet (new, or waiting out a restart backoff).
* ``starting``: its process runs, its health endpoint does not answer 200 yet.
* ``ready``: routed to.
* ``unhealthy``: was ready, fails health checks now; not routed to; back to ready when it
  answers, restarted when it stays down.
* ``draining``: gets no new requests; stopped once its in-flight requests finish.
* ``stopped``: gone (kept briefly for ``aiforge status``).
* ``failed``: crashed too many times in a row; its last log lines are in ``last_error``.

The controller owns these records (:mod:`aiforge.cluster.controller`); the gateway never
writes them. It sees ready replicas through the router's directory
(:mod:`aiforge.router.directory`), which the controller publishes to.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["LIVE_STATES", "Replica", "ReplicaState"]


class ReplicaState(StrEnum):
    PENDING = "pending"
    STARTING = "starting"
    READY = "ready"
    UNHEALTHY = "unhealthy"
    DRAINING = "draining"
    STOPPED = "stopped"
    FAILED = "failed"


LIVE_STATES = frozenset(
    {ReplicaState.PENDING, ReplicaState.STARTING, ReplicaState.READY, ReplicaState.UNHEALTHY}
)
"""States of a replica that counts towards its deployment's replica count."""


@dataclass(slots=True)
class Replica:
    """One replica of one deployment revision."""

    id: str
    deployment: str
    revision: str
    state: ReplicaState = ReplicaState.PENDING
    url: str = ""
    """Base URL without ``/v1`` (``http://127.0.0.1:41234``); empty until started."""
    engine: str = ""
    dialect: str = "openai"
    """How the gateway must read this replica's answers (:mod:`aiforge.gateway.dialects`)."""
    node: str = "local"
    pid: int | None = None
    created_at: float = 0.0
    started_at: float | None = None
    """When its current process started."""
    ready_at: float | None = None
    drain_started_at: float | None = None
    stopped_at: float | None = None
    restarts: int = 0
    """Times the controller restarted it after a crash."""
    consecutive_failures: int = 0
    """Crashes since it was last ready for a while; drives backoff and ``failed``."""
    next_start_at: float = 0.0
    """While pending after a crash: not before this time (exponential backoff)."""
    health_failures: int = 0
    """Consecutive failed health checks."""
    unhealthy_since: float | None = None
    """When it turned unhealthy (it is restarted if it stays so for long)."""
    startup_timeout_s: float | None = None
    """How long its process may take to answer health checks (the engine's own figure);
    None: the controller's default."""
    last_error: str = ""
    external: bool = False
    """Attached by URL: health-checked, never started or stopped by aiforge."""
    max_model_len: int | None = None
    """The context length the replica reports once ready (None: not known)."""

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES

    def public(
        self, *, now: float, in_flight: int = 0, tokens_per_s: float = 0.0
    ) -> dict[str, object]:
        """The replica as ``aiforge status``, ``/health`` and the admin API show it."""
        uptime = (
            now - self.started_at if self.started_at and self.state != ReplicaState.STOPPED else 0.0
        )
        return {
            "id": self.id,
            "deployment": self.deployment,
            "revision": self.revision,
            "state": self.state.value,
            "engine": self.engine,
            "url": self.url,
            "node": self.node,
            "pid": self.pid,
            "in_flight": in_flight,
            "tokens_per_s": round(tokens_per_s, 2),
            "uptime_s": round(max(0.0, uptime), 1),
            "restarts": self.restarts,
            "last_error": self.last_error,
            "external": self.external,
        }
