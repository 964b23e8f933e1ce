"""Hashes for routing: a consistent-hash ring, stable keys, and chain-hashed prefix blocks.

Ring points and keys are BLAKE2b, not Python's :func:`hash`: the built-in is salted per
process (``PYTHONHASHSEED``), so two gateways, or one gateway before and after a restart,
would send the same session or system prompt to different replicas. A stable hash makes every
router that sees the same replicas agree on a key's home, and makes tests deterministic.
Only :func:`chain_hashes`, which never leave the process, trade that for speed.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable, Iterator

__all__ = ["DEFAULT_VIRTUAL_NODES", "HashRing", "chain_hashes", "stable_hash"]

DEFAULT_VIRTUAL_NODES = 160
"""Points per replica on the ring. The share of keys a replica owns deviates from 1/n by
about 1/sqrt(points) (≈8% at 160), and building the ring costs n × points hashes, paid
only when the membership changes."""


def stable_hash(text: str) -> int:
    """A 64-bit hash of ``text``, the same in every process and on every machine."""
    digest = hashlib.blake2b(_utf8(text), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def chain_hashes(text: str, block_chars: int) -> list[int]:
    """One hash per *full* ``block_chars``-character block of ``text``, chained.

    The hash of block ``i`` covers block ``i`` and the hash of block ``i - 1``, so it
    names the whole prefix ``text[: (i + 1) * block_chars]``, as vLLM's automatic prefix
    caching names KV blocks: two texts share hash ``i`` exactly when they share that
    prefix (up to 64-bit collisions). A trailing partial block is not hashed (an engine
    does not cache a partial block under a stable name either). Cost: linear in
    ``len(text)``, about 30 µs for 16k characters.

    These use Python's salted :func:`hash`, four times faster than BLAKE2b here: they key
    an in-process table only and must not be compared across processes (use
    :func:`stable_hash` for anything that must agree between gateways).
    """
    hashes: list[int] = []
    previous = 0
    for start in range(0, len(text) - block_chars + 1, block_chars):
        previous = hash((previous, text[start : start + block_chars]))
        hashes.append(previous)
    return hashes


def _utf8(text: str) -> bytes:
    # Prompts decoded from JSON may hold lone surrogates; they must hash, not raise.
    return text.encode("utf-8", "surrogatepass")


class HashRing:
    """Consistent hashing with virtual nodes.

    Every member owns ``virtual_nodes`` points on a 64-bit circle; a key belongs to the
    first point at or after its hash. Adding or removing one of n members moves only the
    keys of the points it gains or loses, about 1/n of them, and every other key keeps
    its home. :meth:`walk` yields the members in the order a key would fall to them as
    the ones before are ruled out, which is how a load bound overflows a key to its next
    home (consistent hashing with bounded loads, Mirrokni, Thorup & Zadimoghaddam 2016).
    """

    def __init__(self, members: Iterable[str] = (), *, virtual_nodes: int = DEFAULT_VIRTUAL_NODES):
        if virtual_nodes < 1:
            raise ValueError("virtual_nodes must be at least 1")
        self._virtual_nodes = virtual_nodes
        self._members: frozenset[str] = frozenset()
        self._points: list[int] = []
        self._owners: list[str] = []
        self.set_members(members)

    @property
    def members(self) -> frozenset[str]:
        return self._members

    def set_members(self, members: Iterable[str]) -> None:
        """Make ``members`` the ring's members; a no-op when they are the same already."""
        wanted = frozenset(members)
        if wanted == self._members:
            return
        points = sorted(
            (stable_hash(f"{member}#{i}"), member)
            for member in wanted
            for i in range(self._virtual_nodes)
        )
        self._members = wanted
        self._points = [point for point, _ in points]
        self._owners = [owner for _, owner in points]

    def include(self, members: Iterable[str]) -> None:
        """Add any of ``members`` the ring lacks (policies asked about replicas before
        :meth:`~aiforge.router.base.RoutingPolicy.on_replicas_changed` told them)."""
        wanted = frozenset(members)
        if not wanted <= self._members:
            self.set_members(self._members | wanted)

    def walk(self, key: int) -> Iterator[str]:
        """Each member once, starting with ``key``'s home and going clockwise."""
        if not self._points:
            return
        start = bisect.bisect_left(self._points, key)
        seen: set[str] = set()
        count = len(self._owners)
        for step in range(count):
            owner = self._owners[(start + step) % count]
            if owner not in seen:
                seen.add(owner)
                yield owner
                if len(seen) == len(self._members):
                    return

    def home(self, key: int) -> str | None:
        """The member that owns ``key``; None when the ring is empty."""
        return next(self.walk(key), None)
