import math

import pytest

from aiforge.bench.stats import SLO, RequestSample, distribution, percentile, summarize


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([1.0, 2.0, 3.0, 4.0], 50, 2.5),
        ([1.0, 2.0, 3.0, 4.0], 0, 1.0),
        ([1.0, 2.0, 3.0, 4.0], 100, 4.0),
        ([4.0, 1.0, 3.0, 2.0], 90, 3.7),
        ([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0], 99, 10.9),
        ([7.0], 99, 7.0),
    ],
)
def test_percentile_interpolates_linearly_like_numpy(
    values: list[float], q: float, expected: float
) -> None:
    assert percentile(values, q) == pytest.approx(expected)


def test_percentile_matches_numpy_on_many_values() -> None:
    numpy = pytest.importorskip("numpy")
    values = [((i * 7919) % 1000) / 7.0 for i in range(1001)]
    for q in (1, 25, 50, 90, 99, 99.9):
        assert percentile(values, q) == pytest.approx(float(numpy.percentile(values, q)))


def test_percentile_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
    with pytest.raises(ValueError, match="q must"):
        percentile([1.0], 101)


def test_distribution_of_nothing_is_none() -> None:
    assert distribution([]) is None
    d = distribution([0.3, 0.1, 0.2])
    assert d is not None
    assert (d.count, d.min, d.max) == (3, 0.1, 0.3)
    assert d.mean == pytest.approx(0.2)
    assert d.p50 == pytest.approx(0.2)


def sample(
    index: int, start: float, e2e: float, ttft: float | None = None,
    itl: tuple[float, ...] = (), tokens: int = 0, error: str | None = None,
) -> RequestSample:  # fmt: skip
    return RequestSample(
        index=index, start_s=start, e2e_s=e2e, ttft_s=ttft, itl_s=itl, output_tokens=tokens,
        prompt_tokens=None if error else 10, error=error,
    )  # fmt: skip


SAMPLES = [
    sample(0, 0.0, 1.0, ttft=0.2, itl=(0.1, 0.1), tokens=5),
    sample(1, 0.5, 2.0, ttft=0.6, itl=(0.3,), tokens=3),
    sample(2, 1.0, 0.5, error="HTTP 500: boom"),
    sample(3, 2.0, 2.0, ttft=0.4, itl=(0.2, 0.4, 0.6), tokens=4),
]


def test_summary_rates_are_over_first_send_to_last_end() -> None:
    s = summarize(SAMPLES)
    assert (s.requests, s.completed, s.errors) == (4, 3, 1)
    assert s.duration_s == pytest.approx(4.0)  # 0.0 -> 2.0 + 2.0
    assert s.requests_per_s == pytest.approx(3 / 4.0)
    assert s.output_tokens == 12
    assert s.output_tokens_per_s == pytest.approx(12 / 4.0)
    assert s.prompt_tokens == 30
    assert s.mean_concurrency == pytest.approx((1.0 + 2.0 + 0.5 + 2.0) / 4.0)
    assert s.error_kinds == {"HTTP 500: boom": 1}


def test_summary_latencies_use_successes_and_pool_every_gap() -> None:
    s = summarize(SAMPLES)
    assert s.ttft is not None
    assert s.e2e is not None
    assert s.itl is not None
    assert s.ttft.count == 3
    assert s.ttft.p50 == pytest.approx(0.4)
    assert s.e2e.p50 == pytest.approx(2.0)
    assert s.e2e.min == pytest.approx(1.0)
    assert s.itl.count == 6
    assert s.itl.p50 == pytest.approx(0.25)
    assert s.tpot is not None
    # (1.0 - 0.2) / 4, (2.0 - 0.6) / 2, (2.0 - 0.4) / 3
    assert s.tpot.mean == pytest.approx((0.2 + 0.7 + 1.6 / 3) / 3)


def test_goodput_counts_successes_meeting_every_bound() -> None:
    s = summarize(SAMPLES, SLO(ttft_s=0.5))
    assert s.goodput_per_s == pytest.approx(2 / 4.0)
    assert s.good_fraction == pytest.approx(2 / 4)
    both = summarize(SAMPLES, SLO.parse("ttft=500ms,itl=0.15s"))
    assert both.goodput_per_s == pytest.approx(1 / 4.0)  # only request 0: mean ITL 0.1
    e2e = summarize(SAMPLES, SLO.parse("e2e=1.5"))
    assert e2e.goodput_per_s == pytest.approx(1 / 4.0)
    assert summarize(SAMPLES).goodput_per_s is None


def test_an_unmeasured_quantity_fails_its_bound() -> None:
    unstreamed = sample(0, 0.0, 1.0, tokens=4)
    assert not SLO(ttft_s=10.0).met_by(unstreamed)
    assert SLO(e2e_s=10.0).met_by(unstreamed)
    assert not SLO(e2e_s=10.0).met_by(sample(1, 0.0, 1.0, error="x"))


def test_slo_parsing() -> None:
    slo = SLO.parse("ttft=0.5s, itl=50ms,tpot=40ms,e2e=10")
    assert slo == SLO(ttft_s=0.5, itl_s=0.05, tpot_s=0.04, e2e_s=10.0)
    assert slo.needs_streaming
    assert not SLO.parse("e2e=3s").needs_streaming
    for bad in ("ttft", "latency=1s", "ttft=fast", "ttft=-1s", "e2e=1h"):
        with pytest.raises(ValueError, match="bad SLO"):
            SLO.parse(bad)


def test_only_errors_give_nones_not_nans() -> None:
    s = summarize([sample(0, 0.0, 0.5, error="refused")], SLO(ttft_s=1.0))
    assert s.ttft is None
    assert s.itl is None
    assert s.e2e is None
    assert s.tpot is None
    assert s.requests_per_s == 0.0
    assert s.goodput_per_s == 0.0
    assert not any(isinstance(v, float) and math.isnan(v) for v in vars_of(s))


def test_no_samples_at_all() -> None:
    s = summarize([])
    assert (s.requests, s.duration_s, s.requests_per_s) == (0, 0.0, 0.0)


def test_send_lag_of_rate_loads() -> None:
    late = RequestSample(index=0, start_s=1.25, e2e_s=1.0, scheduled_s=1.0)
    early = RequestSample(index=1, start_s=2.0, e2e_s=1.0, scheduled_s=2.0)
    assert summarize([late, early]).max_send_lag_s == pytest.approx(0.25)
    assert summarize(SAMPLES).max_send_lag_s is None


def vars_of(summary: object) -> list[object]:
    return [getattr(summary, name) for name in summary.__slots__]  # type: ignore[attr-defined]


def test_a_failure_after_the_last_success_still_lengthens_the_window() -> None:
    samples = [sample(0, 0.0, 1.0, ttft=0.1, tokens=4), sample(1, 1.5, 1.0, error="timeout")]
    s = summarize(samples)
    assert s.duration_s == pytest.approx(2.5)
    assert s.requests_per_s == pytest.approx(1 / 2.5)
