import math

import pytest
from routing_stats import (
    CacheCounters,
    RequestSample,
    cache_counters,
    render_table,
    summarize,
    ttft_ratio,
)


def ok(ttft: float, latency: float, tokens: int = 8) -> RequestSample:
    return RequestSample(0, 0, ttft, latency, completion_tokens=tokens, prompt_tokens=100)


def test_summarize_counts_errors_apart_and_rates_over_the_wall_time() -> None:
    samples = [ok(1.0, 2.0), ok(3.0, 4.0), RequestSample(1, 0, None, None, error="boom")]
    deltas = [CacheCounters(queries=100, hits=75, requests=2), CacheCounters(100, 25, 1)]
    summary = summarize("round_robin", samples, wall_s=4.0, cache_deltas=deltas)
    assert summary.requests == 3
    assert summary.errors == 1
    assert summary.ttft_p50_s == pytest.approx(2.0)
    assert summary.latency_p50_s == pytest.approx(3.0)
    assert summary.output_tok_s == pytest.approx(16 / 4.0)
    assert summary.requests_per_s == pytest.approx(2 / 4.0)
    assert summary.prompt_tokens == 200
    assert summary.cache_hit_rate == pytest.approx(0.5)
    assert summary.replica_requests == [2, 1]


def test_summarize_with_only_errors_gives_nan_not_a_crash() -> None:
    summary = summarize("x", [RequestSample(0, 0, None, None, error="e")], wall_s=1.0)
    assert math.isnan(summary.ttft_p50_s)
    assert summary.cache_hit_rate is None


def test_ttft_ratio_needs_both_policies() -> None:
    rr = summarize("round_robin", [ok(2.0, 3.0)], 1.0)
    pa = summarize("prefix_affinity", [ok(0.5, 1.0)], 1.0)
    assert ttft_ratio([rr, pa]) == pytest.approx(0.25)
    assert ttft_ratio([rr]) is None


def test_cache_counters_sum_labelled_series_and_skip_comments() -> None:
    text = "\n".join(
        [
            "# HELP vllm:prefix_cache_hits_total Prefix cache hits, in tokens.",
            "# TYPE vllm:prefix_cache_hits_total counter",
            'vllm:prefix_cache_hits_total{engine="0",model_name="m"} 120.0',
            'vllm:prefix_cache_queries_total{engine="0",model_name="m"} 400.0',
            'vllm:request_success_total{finished_reason="length",model_name="m"} 3.0',
            'vllm:request_success_total{finished_reason="stop",model_name="m"} 2.0',
            'vllm:prefix_cache_hits_created{engine="0"} 1.7e9',
        ]
    )
    counters = cache_counters(text)
    assert counters == CacheCounters(queries=400.0, hits=120.0, requests=5.0)
    assert counters - CacheCounters(100.0, 20.0, 1.0) == CacheCounters(300.0, 100.0, 4.0)
    assert counters + CacheCounters(1.0, 1.0, 1.0) == CacheCounters(401.0, 121.0, 6.0)


def test_render_table_has_a_row_per_policy() -> None:
    table = render_table([summarize("round_robin", [ok(1.0, 2.0)], 1.0)])
    lines = table.splitlines()
    assert lines[0].startswith("| policy | TTFT p50")
    assert lines[2].startswith("| round_robin | 1.00 s |")
    assert "| n/a | n/a |" in lines[2]
