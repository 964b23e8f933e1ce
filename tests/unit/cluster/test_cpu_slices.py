from __future__ import annotations

import pytest

from aiforge.cluster.cpus import CpuSlices


def test_one_thread_replicas_spread_over_the_cores() -> None:
    slices = CpuSlices([0, 1])
    assert [slices.allocate(f"r{i}", 1) for i in range(4)] == [(0,), (1,), (0,), (1,)]


def test_a_released_slice_is_handed_out_again_first() -> None:
    slices = CpuSlices([0, 1, 2, 3])
    assert slices.allocate("a", 2) == (0, 1)
    assert slices.allocate("b", 2) == (2, 3)
    slices.release("a")
    assert slices.allocate("c", 1) == (0,)
    assert slices.allocate("c", 1) == (0,)  # idempotent
    assert slices.held() == {"b": (2, 3), "c": (0,)}


def test_no_thread_count_means_every_cpu_and_oversized_requests_are_capped() -> None:
    slices = CpuSlices([3, 1])
    assert slices.allocate("any", None) == ()
    assert slices.allocate("big", 16) == (1, 3)


def test_no_cpus_is_refused() -> None:
    with pytest.raises(ValueError, match="no CPUs"):
        CpuSlices([])
