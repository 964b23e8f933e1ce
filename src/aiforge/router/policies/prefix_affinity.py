"""Prefix affinity: send a prompt to the replica most likely to hold its prefix in KV cache.

Engines with prefix caching (vLLM's automatic prefix caching, SGLang's radix cache,
llama.cpp's slot cache) skip the prefill of a prompt's longest cached prefix, and prefill
is most of the time to first token for long prompts. A multi-turn chat resends its whole
history each turn, and many conversations share a long system prompt, so the replica that
served the previous turn already holds almost all of the next one. This policy keeps a
conversation there, and keeps conversations with one system prompt together, without ever
letting one replica be swamped. Its anchors are Ray Serve's ``PrefixCacheAffinityRouter``
and the cache-aware policy of SGLang's router; where they differ from this module, why:

* **Blocks, not a radix tree.** The gateway has no tokenizer, so ``request.prefix`` is
  text. It is cut into fixed blocks of ``block_chars`` characters (128 ≈ 30 tokens) and
  each block is chain-hashed: block ``i``'s hash covers block ``i - 1``'s, so one hash
  names the whole prefix up to it, as vLLM names its KV blocks. A bounded LRU table
  (:class:`PrefixTable`) maps block hash → the replica that holds it. Both references
  keep a character-level tree per replica; the table gives the same longest-match answer
  at block granularity, costs O(blocks) per request (about 75 µs for a 16k-character
  prompt, hashing included) with no tree to walk or rebalance, and its memory bound is a
  plain entry count (``max_blocks``; 100k entries ≈ 14 MB).
* **Longest match wins.** A replica's match depth is the deepest of the prompt's blocks
  it owns; since a chain hash implies every block before it, that replica has seen the
  whole prefix up to there, even where a shallower, shared block is owned by another
  replica. Any match of one block or more counts (Ray requires a 10% match rate, SGLang
  50%), because the cold path below sends the prompt to the home of its first block
  anyway: a shallow match is never worse than no match.
* **Cold prefixes: the replica holding the fewest prefix groups.** A prompt that matches
  nothing starts a new *group* (its first block: a system prompt, or a conversation's
  opening). It goes to the admitted replica that is home to the fewest groups, ties broken
  by a hash ring on the first block (virtual nodes), as SGLang's router sends a new
  prefix to the replica with the smallest tree. A first version used the ring alone, so
  that gateways agree without talking; measured (``benchmarks/routing.py``, 4 system
  prompts on 2 replicas) it put three of the four groups on one replica, and that
  replica's queue cost more time to first token than the cache saved. Counting groups
  keeps the cache's working set and the load balanced; the ring still decides among
  equals, so gateways with equal counts agree.
* **A load bound instead of an imbalance switch.** Both references turn affinity off
  for everyone when the most and least loaded replicas differ by more than a threshold.
  Here a replica simply may not take a request that would put it above
  ``ceil(1.25 × (in flight + 1) / n) + slack`` (:class:`~._load.LoadBound`, consistent
  hashing with bounded loads): affinity stays on for every request whose home has room,
  and a burst on one system prompt spills only its overflow. When every replica holding
  the prefix is full the request goes to the less loaded of two random admitted
  replicas; a cold prefix whose ring home is full walks on to the next one on the ring.
* **Short prompts** (under one block: nothing worth caching) go to the less loaded of two
  random admitted replicas, as with ``least_outstanding``.
* **What is recorded, when.** :meth:`PrefixAffinityPolicy.on_request_start` records the
  prompt's blocks for the chosen replica. A block keeps its first owner while that
  replica is routable (:meth:`PrefixTable.record` says why); a replica that leaves the
  routable set loses its entries at once, and one that fails a request loses that
  prompt's blocks, so the replica that serves the retry can claim them. Blocks are
  written deepest first, so a prompt's shallow blocks, the ones shared with other
  conversations, are the most recently used and the last evicted, as vLLM evicts a
  sequence's tail blocks before its head. The generated answer is not recorded: it comes
  back as the next turn's prompt.
"""

from __future__ import annotations

import random
from collections import Counter, OrderedDict
from collections.abc import Collection, Sequence

from aiforge.router.base import Endpoint, RoutingPolicy, RoutingRequest
from aiforge.router.policies._hashing import (
    DEFAULT_VIRTUAL_NODES,
    HashRing,
    chain_hashes,
    stable_hash,
)
from aiforge.router.policies._load import LoadBound, power_of_two_choices

__all__ = ["PrefixAffinityPolicy", "PrefixTable"]

DEFAULT_BLOCK_CHARS = 128
DEFAULT_MAX_BLOCKS = 100_000


class PrefixTable:
    """A bounded LRU map from a prefix block's chain hash to the replica that served it."""

    def __init__(self, max_blocks: int = DEFAULT_MAX_BLOCKS) -> None:
        if max_blocks < 1:
            raise ValueError("max_blocks must be at least 1")
        self._max_blocks = max_blocks
        self._owners: OrderedDict[int, str] = OrderedDict()

    def __len__(self) -> int:
        return len(self._owners)

    def record(self, blocks: Sequence[int], replica_id: str) -> None:
        """``replica_id`` served a prompt of ``blocks`` (its chain hashes, in order).

        Blocks new to the table become ``replica_id``'s; blocks already owned keep their
        owner and only become recently used. The first holder of a shared prefix still
        has it cached, and keeping it as the owner means a burst that spills a few
        conversations elsewhere does not drag the prefix's home along with them: later
        conversations return to the original home as soon as it has room, and each
        spilled conversation still follows its own, deeper blocks.
        """
        owners = self._owners
        for block in reversed(blocks):  # deepest first: the head ends most recently used
            if block in owners:
                owners.move_to_end(block)
            else:
                owners[block] = replica_id
        while len(owners) > self._max_blocks:
            owners.popitem(last=False)

    def match_depths(self, blocks: Sequence[int]) -> dict[str, int]:
        """For each replica that owns one of ``blocks``: how many leading blocks of the
        prompt it holds (the position of its deepest block, counted from 1)."""
        depths: dict[str, int] = {}
        owners = self._owners
        for position, block in enumerate(blocks, start=1):
            owner = owners.get(block)
            if owner is not None:
                depths[owner] = position
        return depths

    def disown(self, blocks: Sequence[int], replica_id: str) -> None:
        """Drop those of ``blocks`` that ``replica_id`` owns (it failed to serve them)."""
        owners = self._owners
        for block in blocks:
            if owners.get(block) == replica_id:
                del owners[block]

    def forget(self, replica_ids: Collection[str]) -> None:
        """Drop every block owned by one of ``replica_ids`` (O(table); on removal only)."""
        self._owners = OrderedDict(
            (block, owner) for block, owner in self._owners.items() if owner not in replica_ids
        )


class PrefixAffinityPolicy(RoutingPolicy):
    """Longest cached prefix first, new prefix groups to the replica with the fewest, under a
    load bound.

    See the module docstring for the design. Every choice is among the candidates the
    :class:`LoadBound` admits, so no request ever puts a replica above the bound.
    """

    name = "prefix_affinity"

    def __init__(
        self,
        *,
        block_chars: int = DEFAULT_BLOCK_CHARS,
        max_blocks: int = DEFAULT_MAX_BLOCKS,
        load_bound: LoadBound | None = None,
        virtual_nodes: int = DEFAULT_VIRTUAL_NODES,
        rng: random.Random | None = None,
    ) -> None:
        if block_chars < 1:
            raise ValueError("block_chars must be at least 1")
        self._block_chars = block_chars
        self._table = PrefixTable(max_blocks)
        self._bound = load_bound or LoadBound()
        self._ring = HashRing(virtual_nodes=virtual_nodes)
        self._rng = rng or random.Random()
        self._recorded: set[str] = set()
        """Replicas that may own blocks in the table."""
        self._groups: OrderedDict[int, str] = OrderedDict()
        """Prefix groups (first-block hashes, least recently started first) and their home."""
        self._group_counts: Counter[str] = Counter()
        self._max_groups = max(1, max_blocks // 16)
        # select() and on_request_start() see the same prompt back to back: hash it once.
        self._last_prefix = ""
        self._last_blocks: list[int] = []

    @property
    def table(self) -> PrefixTable:
        return self._table

    def select(self, candidates: Sequence[Endpoint], request: RoutingRequest) -> Endpoint:
        admitted = {endpoint.id: endpoint for endpoint in self._bound.admitted(candidates)}
        blocks = self._blocks(request.prefix)
        if not blocks:
            return power_of_two_choices(list(admitted.values()), self._rng)

        candidate_ids = {endpoint.id for endpoint in candidates}
        depths = self._table.match_depths(blocks)
        affine = sorted(
            (
                (depth, replica_id)
                for replica_id, depth in depths.items()
                if replica_id in candidate_ids
            ),
            reverse=True,
        )
        for _, replica_id in affine:
            endpoint = admitted.get(replica_id)
            if endpoint is not None:
                return endpoint
        if affine:  # its cache holders are all full: spread by load, not by hash
            return power_of_two_choices(list(admitted.values()), self._rng)

        return self._home_for_new_group(request.prefix, candidate_ids, admitted)

    def _home_for_new_group(
        self, prefix: str, candidate_ids: Collection[str], admitted: dict[str, Endpoint]
    ) -> Endpoint:
        """The admitted replica home to the fewest prefix groups; the first block's place
        on the ring breaks ties."""
        self._ring.include(candidate_ids)
        ring_order = {
            replica_id: rank
            for rank, replica_id in enumerate(
                self._ring.walk(stable_hash(prefix[: self._block_chars]))
            )
        }
        return min(
            admitted.values(),
            key=lambda e: (self._group_counts[e.id], ring_order.get(e.id, len(ring_order))),
        )

    def on_request_start(self, endpoint: Endpoint, request: RoutingRequest) -> None:
        blocks = self._blocks(request.prefix)
        if blocks:
            self._table.record(blocks, endpoint.id)
            self._recorded.add(endpoint.id)
            self._count_group(blocks[0], endpoint.id)

    def _count_group(self, group: int, replica_id: str) -> None:
        if group in self._groups:
            self._groups.move_to_end(group)
            return
        self._groups[group] = replica_id
        self._group_counts[replica_id] += 1
        if len(self._groups) > self._max_groups:
            _, evicted = self._groups.popitem(last=False)
            self._group_counts[evicted] -= 1

    def on_request_end(self, endpoint: Endpoint, request: RoutingRequest, *, ok: bool) -> None:
        if not ok:  # it may never have cached the prompt; let the retry's replica claim it
            blocks = self._blocks(request.prefix)
            self._table.disown(blocks, endpoint.id)
            if blocks and self._groups.get(blocks[0]) == endpoint.id:
                del self._groups[blocks[0]]
                self._group_counts[endpoint.id] -= 1

    def on_replicas_changed(self, endpoints: Sequence[Endpoint]) -> None:
        replica_ids = frozenset(endpoint.id for endpoint in endpoints)
        removed = self._recorded - replica_ids
        if removed:  # the directory calls this on every publish: scan only on a removal
            self._table.forget(removed)
            self._recorded -= removed
            self._groups = OrderedDict(
                (group, home) for group, home in self._groups.items() if home not in removed
            )
            for replica_id in removed:
                del self._group_counts[replica_id]
        self._ring.set_members(replica_ids)

    def _blocks(self, prefix: str) -> list[int]:
        if prefix != self._last_prefix:
            self._last_prefix = prefix
            self._last_blocks = chain_hashes(prefix, self._block_chars)
        return self._last_blocks
