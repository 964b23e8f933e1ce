"""The replica table: which replicas serve which model, and which of them are ready.

The table is the router's view of the cluster. Runtimes and the health monitor *push*
state changes into it; the gateway only reads it (and reports a replica it could not
reach). Everything here is pure in-memory bookkeeping, safe to call from one event loop.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum


class ReplicaState(StrEnum):
    STARTING = "starting"
    READY = "ready"
    UNHEALTHY = "unhealthy"
    """It answered before but cannot be reached now; the health monitor may revive it."""
    DEAD = "dead"
    """Its process exited."""
    STOPPED = "stopped"


@dataclass(slots=True)
class Replica:
    """One process serving one model's OpenAI endpoints at ``url``."""

    id: str
    model: str
    url: str
    """Base URL without the ``/v1`` suffix, e.g. ``http://127.0.0.1:41234``."""
    state: ReplicaState = ReplicaState.STARTING
    engine: str = ""
    pid: int | None = None
    in_flight: int = 0
    last_error: str = ""

    def public(self) -> dict[str, object]:
        """The replica as ``/health`` shows it."""
        return {
            "id": self.id,
            "model": self.model,
            "engine": self.engine,
            "url": self.url,
            "state": self.state.value,
            "pid": self.pid,
            "in_flight": self.in_flight,
            "last_error": self.last_error,
        }


class UnknownReplicaError(KeyError):
    pass


class ReplicaTable:
    """Replicas by id, with the least-loaded-first choice the router needs."""

    def __init__(self) -> None:
        self._replicas: dict[str, Replica] = {}
        self._rotation = itertools.count()

    def add(self, replica: Replica) -> Replica:
        """Register a replica (replacing one with the same id)."""
        self._replicas[replica.id] = replica
        return replica

    def remove(self, replica_id: str) -> None:
        self._replicas.pop(replica_id, None)

    def get(self, replica_id: str) -> Replica:
        try:
            return self._replicas[replica_id]
        except KeyError:
            raise UnknownReplicaError(replica_id) from None

    def set_state(self, replica_id: str, state: ReplicaState, *, error: str = "") -> None:
        replica = self.get(replica_id)
        replica.state = state
        replica.last_error = error

    def __iter__(self) -> Iterator[Replica]:
        return iter(list(self._replicas.values()))

    def __len__(self) -> int:
        return len(self._replicas)

    def models(self) -> list[str]:
        """Every model that has a replica, in any state (so a down model answers 503, not 404)."""
        return sorted({r.model for r in self._replicas.values() if r.state != ReplicaState.STOPPED})

    def serves(self, model: str) -> bool:
        return model in self.models()

    def candidates(self, model: str) -> list[Replica]:
        """Ready replicas of ``model``, the one to try first first.

        Least in-flight requests wins; ties rotate so equal replicas share the load.
        """
        ready = [
            r for r in self._replicas.values() if r.model == model and r.state == ReplicaState.READY
        ]
        if len(ready) > 1:
            shift = next(self._rotation) % len(ready)
            ready = ready[shift:] + ready[:shift]
        # A stable sort keeps the rotation among replicas with equal load.
        return sorted(ready, key=lambda r: r.in_flight)

    def snapshot(self) -> list[dict[str, object]]:
        return [r.public() for r in self._replicas.values()]
