import statistics
from itertools import islice

from routing import think_times


def test_think_times_are_seeded_per_conversation_and_average_the_mean() -> None:
    first = list(islice(think_times(0, 3, 2.0), 2000))

    assert first == list(islice(think_times(0, 3, 2.0), 2000))  # same for every policy
    assert first[:10] != list(islice(think_times(0, 4, 2.0), 10))  # conversations differ
    assert all(pause >= 0 for pause in first)
    assert 1.8 < statistics.fmean(first) < 2.2


def test_no_think_time_is_all_zeros() -> None:
    assert list(islice(think_times(0, 1, 0.0), 5)) == [0.0] * 5
