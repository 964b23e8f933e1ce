import itertools
import statistics

import pytest

from aiforge.bench.schedule import Load, arrival_offsets, first_arrivals, parse_loads


def test_the_same_seed_gives_the_same_arrivals_and_another_seed_others() -> None:
    assert first_arrivals(4.0, seed=3, count=50) == first_arrivals(4.0, seed=3, count=50)
    assert first_arrivals(4.0, seed=3, count=50) != first_arrivals(4.0, seed=4, count=50)


def test_poisson_arrivals_have_the_asked_mean_rate_and_exponential_gaps() -> None:
    rate, count = 8.0, 20_000
    times = first_arrivals(rate, seed=0, count=count)
    assert all(b > a for a, b in itertools.pairwise(times))
    gaps = [b - a for a, b in zip([0.0, *times], times, strict=False)]
    mean = statistics.fmean(gaps)
    assert mean == pytest.approx(1 / rate, rel=0.03)
    # Exponential gaps: standard deviation equal to the mean (coefficient of variation 1).
    assert statistics.stdev(gaps) / mean == pytest.approx(1.0, rel=0.05)
    # Arrivals in a window of T seconds: Poisson, mean rate * T.
    assert count / times[-1] == pytest.approx(rate, rel=0.03)


def test_arrivals_are_endless_and_refuse_a_zero_rate() -> None:
    offsets = arrival_offsets(100.0, seed=1)
    assert len([next(offsets) for _ in range(10_000)]) == 10_000
    with pytest.raises(ValueError, match="positive"):
        next(arrival_offsets(0.0, seed=1))


def test_parse_loads() -> None:
    assert parse_loads() == [Load("concurrency", 1)]
    assert parse_loads(concurrency="1, 4,16") == [
        Load("concurrency", 1), Load("concurrency", 4), Load("concurrency", 16),
    ]  # fmt: skip
    assert parse_loads(rate="0.5,2", max_concurrency=8) == [
        Load("rate", 0.5, 8), Load("rate", 2.0, 8),
    ]  # fmt: skip
    assert parse_loads(concurrency="2", max_concurrency=8) == [Load("concurrency", 2)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"concurrency": "2", "rate": "1"}, "not both"),
        ({"concurrency": "2,x"}, "not a number"),
        ({"rate": "0"}, "positive"),
        ({"rate": "inf"}, "positive"),
        ({"concurrency": "1.5"}, "whole number"),
        ({"rate": "1", "max_concurrency": 0}, "max_concurrency"),
    ],
)
def test_parse_loads_refuses_nonsense(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_loads(**kwargs)  # type: ignore[arg-type]


def test_load_slots_and_labels() -> None:
    assert Load("concurrency", 4).slots == 4
    assert Load("rate", 2.5).slots is None
    assert Load("rate", 2.5, 3).slots == 3
    assert Load("concurrency", 4).label == "concurrency 4"
    assert Load("rate", 2.5).label == "rate 2.5/s"
