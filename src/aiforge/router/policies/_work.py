"""Outstanding work per replica, in prefix blocks: what a new request would queue behind.

A replica's time to first token for a new request is, to a first approximation, the
prefill still ahead of it plus its own: the prompt tokens the replica must compute because
its KV cache does not hold them. Counting requests in flight ignores that one of them may
be a cold 2,000-token prompt and another a cache hit of 100 new tokens, twenty times less
work. :class:`OutstandingWork` keeps, per replica, the estimated cost of every request in
flight there: the blocks of its prompt the replica was not known to hold when it was sent
(its *miss*) plus a fixed ``decode_cost`` for the decode steps it shares with whatever
comes next. A request's cost is counted until it ends: the router hears when a request
starts and ends, not when its prefill is done, so the estimate errs towards "busy", which
only makes a policy keep a request at a home that has its prefix slightly less often.

Pure and in-memory; every operation is O(1) except :meth:`OutstandingWork.forget`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection

__all__ = ["DEFAULT_DECODE_COST", "OutstandingWork"]

DEFAULT_DECODE_COST = 2
"""What a request in flight costs those behind it besides its prefill, in blocks (~60
tokens of prefill): its share of the decode steps a new request's prefill is batched with."""


class OutstandingWork:
    """Estimated work in flight per replica, in prefix blocks."""

    def __init__(self, decode_cost: int = DEFAULT_DECODE_COST) -> None:
        if decode_cost < 0:
            raise ValueError("decode_cost must not be negative")
        self._decode_cost = decode_cost
        self._costs: defaultdict[str, dict[str, int]] = defaultdict(dict)
        self._totals: defaultdict[str, int] = defaultdict(int)

    def of(self, replica_id: str) -> int:
        """The blocks of work in flight on ``replica_id``."""
        return self._totals.get(replica_id, 0)

    def start(self, replica_id: str, request_id: str, miss_blocks: int) -> None:
        """``request_id`` was sent to ``replica_id``, which must prefill ``miss_blocks``."""
        cost = max(0, miss_blocks) + self._decode_cost
        costs = self._costs[replica_id]
        costs[request_id] = costs.get(request_id, 0) + cost
        self._totals[replica_id] += cost

    def end(self, replica_id: str, request_id: str) -> None:
        """``request_id`` on ``replica_id`` finished (a no-op if it was never started)."""
        costs = self._costs.get(replica_id)
        if costs is None or request_id not in costs:
            return
        self._totals[replica_id] -= costs.pop(request_id)
        if not costs:
            del self._costs[replica_id]
            del self._totals[replica_id]

    def forget(self, replica_ids: Collection[str]) -> None:
        """Drop everything in flight on ``replica_ids`` (they left the deployment)."""
        for replica_id in replica_ids:
            self._costs.pop(replica_id, None)
            self._totals.pop(replica_id, None)
