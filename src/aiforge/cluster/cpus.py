"""CPU slices for the replicas of one machine. Pure bookkeeping, no I/O.

A replica that asks for ``threads`` CPUs gets its own slice of the CPUs this process may
use: the ones fewest other replicas hold, lowest number first. Two one-thread replicas on a
two-core machine then run on a core each, instead of both engines pinning their threads to
the first core (vLLM binds its OpenMP threads to explicit CPUs). A replica that asks for no
thread count gets no slice: it may use every CPU, as a single replica should.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

__all__ = ["CpuSlices"]


class CpuSlices:
    """Which CPUs each running replica holds."""

    def __init__(self, cpus: Iterable[int]) -> None:
        self._cpus = tuple(sorted(set(cpus)))
        if not self._cpus:
            raise ValueError("no CPUs to hand out")
        self._held: dict[str, tuple[int, ...]] = {}

    def allocate(self, replica_id: str, threads: int | None) -> tuple[int, ...]:
        """The slice for ``replica_id`` (empty: every CPU); idempotent per replica."""
        if threads is None:
            return ()
        if replica_id in self._held:
            return self._held[replica_id]
        holders = Counter(cpu for held in self._held.values() for cpu in held)
        ranked = sorted(self._cpus, key=lambda cpu: (holders[cpu], cpu))
        chosen = tuple(sorted(ranked[: max(1, min(threads, len(ranked)))]))
        self._held[replica_id] = chosen
        return chosen

    def release(self, replica_id: str) -> None:
        self._held.pop(replica_id, None)

    def held(self) -> dict[str, tuple[int, ...]]:
        return dict(self._held)
