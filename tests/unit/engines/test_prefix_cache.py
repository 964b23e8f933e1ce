"""The prefix cache's index: chained block hashes, longest match, LRU bound, stats."""

from __future__ import annotations

import pytest

from aiforge.engines.prefix_cache import PrefixCache, PrefixMatch, block_hashes

B = 4  # block size in these tests


def tokens(n: int, start: int = 100) -> list[int]:
    return list(range(start, start + n))


def test_block_hashes_chain_the_whole_prefix() -> None:
    a = block_hashes([1, 2, 3, 4, 5, 6, 7, 8, 9], B)
    assert len(a) == 2  # the partial block [9] has no hash
    # The same second block after a different first block hashes differently.
    b = block_hashes([0, 2, 3, 4, 5, 6, 7, 8], B)
    assert a[0] != b[0]
    assert a[1] != b[1]
    assert block_hashes([1, 2, 3, 4, 5, 6, 7, 8], B) == a
    assert block_hashes([1, 2, 3], B) == []


def test_longest_match_extends_past_the_last_whole_block() -> None:
    cache = PrefixCache(max_entries=4, block_size=B)
    cache.insert(7, tokens(10))
    prompt = [*tokens(10), 1, 2, 3]
    assert cache.lookup(prompt) == PrefixMatch(location=7, length=10, entry_length=10)
    # Diverging inside the third block: two whole blocks and one token more.
    assert cache.lookup([*tokens(9), 0, 0]) == PrefixMatch(7, 9, 10)


def test_never_the_whole_prompt_and_at_least_one_block() -> None:
    cache = PrefixCache(max_entries=4, block_size=B)
    cache.insert(0, tokens(12))
    match = cache.lookup(tokens(12))
    assert match is not None
    assert match.length == 11
    assert not match.covers_entry
    assert cache.lookup(tokens(4)) is None  # a one-block prompt keeps that block to compute
    assert cache.lookup([*tokens(3), 0, 1, 2, 3]) is None  # not even one whole block
    assert cache.lookup(tokens(12, start=5)) is None


def test_prefers_the_longest_then_the_preferred_location_then_the_most_recent() -> None:
    cache = PrefixCache(max_entries=4, block_size=B)
    cache.insert(0, tokens(8))
    cache.insert(1, [*tokens(8), 5, 5, 5, 5])
    cache.insert(2, [*tokens(8), 6, 6, 6, 6])
    assert cache.lookup([*tokens(8), 5, 5, 5, 5, 9]) == PrefixMatch(1, 12, 12)
    # Equally long (8 tokens) in all three: the preferred location wins…
    assert cache.lookup([*tokens(8), 0], prefer=0) == PrefixMatch(0, 8, 8)
    # …else the most recently used (entry 0 was just used).
    assert cache.lookup([*tokens(8), 0]) == PrefixMatch(0, 8, 8)
    cache.lookup([*tokens(8), 6, 6, 6, 6, 0])
    assert cache.lookup([*tokens(8), 0]) == PrefixMatch(2, 8, 12)


def test_eviction_keeps_the_bound_and_drops_the_least_recently_used() -> None:
    cache = PrefixCache(max_entries=2, block_size=B)
    assert cache.insert(0, tokens(8, start=0)) == []
    assert cache.insert(1, tokens(8, start=50)) == []
    cache.lookup([*tokens(8, start=0), 1])  # entry 0 is now the most recent
    assert cache.insert(2, tokens(8, start=90)) == [1]
    assert len(cache) == 2
    assert 1 not in cache
    assert cache.lookup([*tokens(8, start=50), 1]) is None
    assert cache.stats().evictions == 1
    # Too short to reuse: not kept, its location comes straight back.
    assert cache.insert(3, tokens(B - 1)) == [3]
    assert 3 not in cache


def test_take_relocate_and_clear_keep_the_index_consistent() -> None:
    cache = PrefixCache(max_entries=3, block_size=B)
    cache.insert(0, tokens(8))
    cache.insert(1, tokens(8, start=9))
    cache.relocate(0, 5)
    assert cache.lookup([*tokens(8), 0]) == PrefixMatch(5, 8, 8)
    with pytest.raises(ValueError, match="already holds"):
        cache.relocate(1, 5)
    assert cache.take(5) == 8
    assert cache.lookup([*tokens(8), 0]) is None
    assert sorted(cache.clear()) == [1]
    assert len(cache) == 0
    assert cache.lookup([*tokens(8, start=9), 0]) is None


def test_a_hash_collision_never_matches_other_tokens() -> None:
    cache = PrefixCache(max_entries=2, block_size=B)
    cache.insert(0, tokens(8))
    # Forge a collision: make the index claim entry 0 holds another prompt's first block.
    other = [9, 9, 9, 9, 0]
    (forged,) = block_hashes(other[:B], B)
    cache._holders[forged] = {0: None}
    assert cache.lookup(other) is None


def test_stats_count_prompts_and_tokens() -> None:
    cache = PrefixCache(max_entries=2, block_size=B)
    cache.insert(0, tokens(8))
    cache.lookup([*tokens(8), 1, 2])  # 8 of 10 tokens hit
    cache.lookup(tokens(10, start=500))  # a miss
    stats = cache.stats()
    assert (stats.queries, stats.hits) == (2, 1)
    assert (stats.queried_tokens, stats.hit_tokens) == (20, 8)
    assert stats.hit_rate == pytest.approx(0.4)
    assert (stats.entries, stats.max_entries) == (1, 2)


def test_bounds_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        PrefixCache(max_entries=0)
    cache = PrefixCache(max_entries=2, block_size=B)
    cache.insert(0, tokens(8))
    with pytest.raises(ValueError, match="already holds"):
        cache.insert(0, tokens(8))
