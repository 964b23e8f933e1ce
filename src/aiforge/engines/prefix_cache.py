"""Automatic prefix caching for aiforge's own engines: which resident KV a prompt can reuse.

Both engines keep one KV *location* per sequence (the transformers engine: a row of its
slot cache; llama.cpp: a sequence id). With prefix caching on, a sequence that finishes
does not give its KV back at once: its location stays *resident*, indexed here by the
tokens whose keys and values it holds, until a later prompt reuses it or it is evicted.
A prompt that starts like a resident entry then copies (or adopts) that KV and prefills
only the rest.

The index is vLLM's automatic prefix caching, per sequence instead of per page: a prompt
is cut into blocks of :data:`BLOCK_SIZE` tokens, and block ``i``'s hash chains the hash of
block ``i - 1``, so one hash names a whole prefix. :meth:`PrefixCache.lookup` walks the
prompt's chain while some entry holds the block, then compares tokens (a hash collision
can never serve wrong KV) and extends the match token by token past the last whole block.
A match never covers the whole prompt: the last prompt token is always computed, since
its logits give the first output token.

The bound on memory is the number of resident entries (``max_entries``): each holds one
sequence's KV. Inserting past it evicts the least recently used entry. Where an entry's
KV lives, and what copying it costs, is the engine's business: this module is pure
bookkeeping (no torch, no llama.cpp, no threads) and is driven by the engines' schedulers
from their loop thread. :meth:`PrefixCache.stats` may be read from any thread.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

__all__ = [
    "BLOCK_SIZE",
    "DEFAULT_PREFIX_CACHE_SEQUENCES",
    "PrefixCache",
    "PrefixCacheStats",
    "PrefixMatch",
    "block_hashes",
]

BLOCK_SIZE = 16
"""Tokens per hashed block; a reusable prefix is at least one block long."""

DEFAULT_PREFIX_CACHE_SEQUENCES = 4
"""Finished sequences whose KV stays resident when nothing else is configured."""

_ROOT_HASH = 0x5EED


def _chain(parent: int, block: Sequence[int]) -> int:
    # Python hashes ints and tuples of ints the same way in every process (no hash seed).
    return hash((parent, *block))


def block_hashes(token_ids: Sequence[int], block_size: int = BLOCK_SIZE) -> list[int]:
    """The chained hash of every whole block of ``token_ids`` (a trailing partial block
    has none): ``hashes[i]`` names the prefix ``token_ids[: (i + 1) * block_size]``."""
    hashes: list[int] = []
    parent = _ROOT_HASH
    for start in range(0, len(token_ids) - block_size + 1, block_size):
        parent = _chain(parent, token_ids[start : start + block_size])
        hashes.append(parent)
    return hashes


@dataclass(frozen=True, slots=True)
class PrefixMatch:
    """A prompt's longest reusable prefix: the first ``length`` tokens of the entry at
    ``location``, which holds ``entry_length`` tokens in all."""

    location: int
    length: int
    entry_length: int

    @property
    def covers_entry(self) -> bool:
        """The prompt reuses everything the entry holds: adopting it loses nothing."""
        return self.length == self.entry_length


@dataclass(frozen=True, slots=True)
class PrefixCacheStats:
    """Counters since the engine started (``/metrics`` renders them)."""

    queries: int = 0
    """Prompts looked up."""
    hits: int = 0
    """Prompts that reused some resident KV."""
    queried_tokens: int = 0
    """Prompt tokens of the prompts looked up."""
    hit_tokens: int = 0
    """Of those, tokens served from the cache (not computed)."""
    entries: int = 0
    """Finished sequences resident now."""
    max_entries: int = 0
    evictions: int = 0

    @property
    def hit_rate(self) -> float:
        """Share of looked-up prompt tokens served from the cache (vLLM's definition)."""
        return self.hit_tokens / self.queried_tokens if self.queried_tokens else 0.0


@dataclass(slots=True)
class _Entry:
    tokens: tuple[int, ...]
    hashes: list[int]
    last_used: int


class PrefixCache:
    """Resident KV entries, one per location, found by the chained hashes of their blocks."""

    def __init__(self, *, max_entries: int, block_size: int = BLOCK_SIZE) -> None:
        if max_entries < 1 or block_size < 1:
            raise ValueError("max_entries and block_size must be at least 1")
        self.max_entries = max_entries
        self.block_size = block_size
        self._entries: dict[int, _Entry] = {}
        self._holders: dict[int, dict[int, None]] = {}
        """Block hash -> locations whose entry holds that prefix (an ordered set)."""
        self._clock = 0
        self._queries = self._hits = self._queried_tokens = self._hit_tokens = 0
        self._evictions = 0

    # -- queries ---------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, location: object) -> bool:
        return location in self._entries

    def locations(self) -> list[int]:
        """Locations holding an entry, least recently used first."""
        return sorted(self._entries, key=lambda loc: self._entries[loc].last_used)

    def length(self, location: int) -> int:
        """Tokens the entry at ``location`` holds."""
        return len(self._entries[location].tokens)

    def stats(self) -> PrefixCacheStats:
        return PrefixCacheStats(
            queries=self._queries,
            hits=self._hits,
            queried_tokens=self._queried_tokens,
            hit_tokens=self._hit_tokens,
            entries=len(self._entries),
            max_entries=self.max_entries,
            evictions=self._evictions,
        )

    def lookup(self, token_ids: Sequence[int], *, prefer: int | None = None) -> PrefixMatch | None:
        """The longest resident prefix of ``token_ids`` (at most ``len - 1`` tokens and at
        least one block), or None; counted in :meth:`stats`. Among equally long matches the
        entry at ``prefer`` wins (the engine can adopt it without a copy), then the most
        recently used. The chosen entry counts as used now."""
        prompt = tuple(token_ids)
        self._queries += 1
        self._queried_tokens += len(prompt)
        match = self._longest(prompt, prefer)
        if match is None:
            return None
        self._hits += 1
        self._hit_tokens += match.length
        self._touch(match.location)
        return match

    def _longest(self, prompt: tuple[int, ...], prefer: int | None) -> PrefixMatch | None:
        limit = len(prompt) - 1
        size = self.block_size
        holders: dict[int, None] | None = None
        depth = 0
        parent = _ROOT_HASH
        for start in range(0, limit - size + 1, size):
            parent = _chain(parent, prompt[start : start + size])
            found = self._holders.get(parent)
            if not found:
                break
            holders, depth = found, depth + 1
        if holders is None:
            return None
        whole = depth * size
        best: tuple[int, bool, int] | None = None
        match: PrefixMatch | None = None
        for location in holders:
            entry = self._entries[location]
            if entry.tokens[:whole] != prompt[:whole]:  # a hash collision: not this one
                continue
            end = min(limit, len(entry.tokens))
            length = whole
            while length < end and entry.tokens[length] == prompt[length]:
                length += 1
            key = (length, location == prefer, entry.last_used)
            if best is None or key > best:
                best = key
                match = PrefixMatch(location, length, len(entry.tokens))
        return match

    # -- changes -------------------------------------------------------------------------
    def insert(self, location: int, token_ids: Sequence[int]) -> list[int]:
        """Keep the KV of ``token_ids`` (the finished sequence's computed tokens) resident
        at ``location``. Returns the locations the engine must now free: ``location``
        itself when it holds less than one block (nothing to reuse), and any least
        recently used entry evicted to stay within ``max_entries``."""
        if location in self._entries:
            raise ValueError(f"location {location} already holds a resident entry")
        tokens = tuple(token_ids)
        hashes = block_hashes(tokens, self.block_size)
        if not hashes:
            return [location]
        self._clock += 1
        self._entries[location] = _Entry(tokens, hashes, self._clock)
        for h in hashes:
            self._holders.setdefault(h, {})[location] = None
        freed: list[int] = []
        while len(self._entries) > self.max_entries:
            victim = self.evict_lru(exclude=(location,))
            assert victim is not None
            freed.append(victim)
        return freed

    def evict_lru(self, exclude: Collection[int] = ()) -> int | None:
        """Drop the least recently used entry not at ``exclude``; its location, or None."""
        for location in self.locations():
            if location not in exclude:
                self.take(location)
                self._evictions += 1
                return location
        return None

    def take(self, location: int) -> int:
        """Remove the entry at ``location`` (adopted by a new sequence, or evicted by the
        engine); returns how many tokens it held."""
        entry = self._entries.pop(location)
        for h in entry.hashes:
            holders = self._holders[h]
            del holders[location]
            if not holders:
                del self._holders[h]
        return len(entry.tokens)

    def relocate(self, src: int, dst: int) -> None:
        """The entry's KV was moved from ``src`` to the free location ``dst``."""
        if dst in self._entries:
            raise ValueError(f"location {dst} already holds a resident entry")
        entry = self._entries.pop(src)
        self._entries[dst] = entry
        for h in entry.hashes:
            holders = self._holders[h]
            del holders[src]
            holders[dst] = None

    def clear(self) -> list[int]:
        """Forget every entry (their KV can no longer be trusted); their locations."""
        locations = list(self._entries)
        for location in locations:
            self.take(location)
        return locations

    def _touch(self, location: int) -> None:
        self._clock += 1
        self._entries[location].last_used = self._clock
