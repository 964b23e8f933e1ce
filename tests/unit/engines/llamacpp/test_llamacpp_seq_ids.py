"""Which consecutive sequence ids the running sequences take: pure logic."""

from __future__ import annotations

import pytest

from aiforge.engines.llamacpp.seq_ids import contiguous_window, moves_needed


def test_the_lowest_run_when_nothing_is_in_the_way() -> None:
    assert contiguous_window(8, 3, running=()) == range(0, 3)
    assert contiguous_window(8, 0, running=()) == range(0, 0)


def test_running_sequences_stay_where_they_are() -> None:
    assert contiguous_window(8, 3, running=(4, 5)) == range(3, 6)  # one joins below
    assert contiguous_window(8, 2, running=(1, 2)) == range(1, 3)  # no need to start at 0


def test_the_run_avoids_resident_entries() -> None:
    # The benchmark's second wave: entries at 4..7, 8 streams joining, 12 ids.
    assert contiguous_window(12, 8, running=(), entries=(0, 1, 2, 3)) == range(4, 12)
    assert contiguous_window(20, 8, running=(), entries=(4, 5, 6, 7)) == range(8, 16)


def test_an_entry_adopted_whole_is_not_in_the_way() -> None:
    assert contiguous_window(4, 1, running=(), entries=(0,)) == range(1, 2)
    assert contiguous_window(4, 1, running=(), entries=(0,), adoptable=(0,)) == range(0, 1)


def test_the_fewest_moves_when_every_run_needs_some() -> None:
    # a at 0, an entry at 1, one more joining; ids 0..2: moving the entry (1) beats
    # moving a and the entry (2).
    assert contiguous_window(3, 2, running=(0,), entries=(1,)) == range(0, 2)
    assert moves_needed(range(0, 2), (0,), (1,), ()) == 1
    assert moves_needed(range(1, 3), (0,), (1,), ()) == 2
    # a gap in the middle: the last sequence moves down (lowest start among equals).
    assert contiguous_window(3, 2, running=(0, 2)) == range(0, 2)


def test_a_run_longer_than_the_ids_is_refused() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        contiguous_window(4, 5, running=())
