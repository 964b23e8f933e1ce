"""``benchmarks/plot_results.py``: what it reads from the committed results is what
docs/benchmarks.md reports, and a figure comes out as a PNG of the intended size."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import plot_results
import pytest
from plot_results import (
    PLOTS,
    RESULTS,
    ceiling_rows,
    gateway_cells,
    p50_over_round_robin,
    policy_rows,
    prefix_rows,
    render,
    run_date,
    vllm_rows,
)


def load(name: str) -> Any:
    return json.loads((RESULTS / name).read_text())


def test_every_plot_reads_committed_files() -> None:
    for plot in PLOTS:
        for name in (*plot.inputs, *plot.optional):
            assert (RESULTS / name).is_file(), name
    assert len({plot.name for plot in PLOTS}) == len(PLOTS)


def test_run_date_is_the_end_of_the_file_name() -> None:
    assert run_date(Path("gateway-vs-litellm-2026-11-30.json")) == "2026-11-30"
    with pytest.raises(ValueError, match="no date"):
        run_date(Path("routing.json"))


def test_gateway_cells_match_the_docs_table() -> None:
    cells = gateway_cells(load("gateway-vs-litellm-2026-11-30.json"))
    assert [cell.label for cell in cells] == [
        "not streamed, c=1",
        "not streamed, c=16",
        "not streamed, c=64",
        "streamed, c=1",
        "streamed, c=16",
        "streamed, c=64",
    ]
    one, sixteen = cells[0], cells[1]
    assert set(one.added_p50_ms) == {"aiforge", "aiforge-baseline", "litellm"}  # no "direct"
    # not streamed, c=1: 0.30 / 0.43 / 9.8 ms added at p50
    assert one.added_p50_ms["aiforge"] == pytest.approx(0.30, abs=0.005)
    assert one.added_p50_ms["aiforge-baseline"] == pytest.approx(0.43, abs=0.005)
    assert one.added_p50_ms["litellm"] == pytest.approx(9.8, abs=0.05)
    # the headline: 1.45× the old gateway's req/s at 16 connections, 33× less added latency
    # than LiteLLM at one, ~50× its req/s
    assert sixteen.req_per_s["aiforge"] == pytest.approx(4951, abs=1)
    assert sixteen.req_per_s["aiforge-baseline"] == pytest.approx(3416, abs=1)
    assert sixteen.throughput_advantage("aiforge-baseline") == pytest.approx(1.45, abs=0.005)
    assert one.latency_advantage("litellm") == pytest.approx(33, abs=0.5)
    assert sixteen.throughput_advantage("litellm") == pytest.approx(49.3, abs=0.1)
    # streamed, c=1: 0.47 ms added
    assert cells[3].added_p50_ms["aiforge"] == pytest.approx(0.47, abs=0.005)


def test_gateway_cells_leave_out_targets_a_run_did_not_have() -> None:
    doc = {
        "machine": {"cpus": 2},
        "streamed, concurrency 4": [
            {"target": "direct", "added_p50_ms": 0.0, "req_per_s": 100.0},
            {"target": "aiforge", "added_p50_ms": 0.5, "req_per_s": 80.0},
        ],
    }
    (cell,) = gateway_cells(doc)
    assert (cell.streamed, cell.concurrency) == (True, 4)
    assert cell.req_per_s == {"aiforge": 80.0}


def test_llamacpp_ceiling_rows_match_the_docs_table() -> None:
    rows = ceiling_rows(load("engine-ceiling-llamacpp-native-2026-11-29.json"))
    assert [row.streams for row in rows] == [1, 8, 16]
    expected = [(13.0, 13.6, 1.05, 1.04, 1.05), (47.2, 45.7, 0.97, 0.95, 0.99)]
    expected.append((59.9, 57.5, 0.96, 0.96, 0.96))
    for row, (ceiling, engine, ratio, low, high) in zip(rows, expected, strict=True):
        assert round(row.ceiling_tok_s, 1) == ceiling
        assert round(row.engine_tok_s, 1) == engine
        assert round(row.ratio, 2) == ratio
        assert (round(min(row.ratios), 2), round(max(row.ratios), 2)) == (low, high)


def test_transformers_ceiling_rows_match_the_docs_table() -> None:
    together = ceiling_rows(load("engine-ceiling-transformers-2026-11-29.json"))
    (staggered,) = ceiling_rows(load("engine-ceiling-transformers-staggered-2026-11-29.json"))
    one, eight = together
    assert (round(one.ceiling_tok_s, 1), round(one.engine_tok_s, 1)) == (8.8, 8.5)
    assert round(one.ratio, 2) == 0.97
    assert round(eight.ratio, 2) == 0.98
    assert staggered.streams == 8
    assert (round(staggered.ceiling_tok_s, 1), round(staggered.engine_tok_s, 1)) == (25.5, 32.8)
    assert round(staggered.ratio, 2) == 1.29


def test_ceiling_ratio_is_the_median_of_the_per_repetition_ratios() -> None:
    run = [
        {
            "streams": 2,
            "ceiling": [{"tokens": 10, "seconds": 1.0}, {"tokens": 10, "seconds": 2.0}],
            "engine": [{"tokens": 10, "seconds": 0.5}, {"tokens": 10, "seconds": 4.0}],
        }
    ]
    (row,) = ceiling_rows(run)
    assert row.ratios == (2.0, 0.5)
    assert row.ratio == pytest.approx(1.25)
    assert row.ceiling_tok_s == pytest.approx(7.5)
    assert row.engine_tok_s == pytest.approx(11.25)


def test_prefix_rows_match_the_docs_table_and_the_files_own_ratio() -> None:
    doc = load("prefix-cache-2026-11-29.json")
    rows = prefix_rows(doc)
    assert [(row.engine, row.cache) for row in rows] == [
        ("transformers", True),
        ("transformers", False),
        ("llamacpp", True),
        ("llamacpp", False),
    ]
    assert (round(rows[0].turn1_ttft_s, 2), round(rows[0].turn2_ttft_s, 2)) == (18.04, 2.19)
    assert [round(row.ratio, 2) for row in rows] == [0.12, 1.01, 0.08, 1.03]
    for row, result in zip(rows, doc["results"], strict=True):
        assert row.ratio == pytest.approx(result["ratio"])
    assert all(row.ratio <= plot_results.PREFIX_TARGET for row in rows if row.cache)


def test_policy_rows_match_the_docs_tables() -> None:
    doc = load("routing-cache-pressure-2026-11-29.json")
    rows = policy_rows(doc)
    assert [row.policy for row in rows] == list(plot_results.POLICIES)
    by_policy = {row.policy: row for row in rows}
    assert round(by_policy["prefix_affinity"].ttft_p50_s, 2) == 0.67
    assert round(by_policy["round_robin"].ttft_p90_s, 2) == 9.06
    assert round(by_policy["prefix_affinity"].cache_hit_rate, 2) == 0.86
    ratios = p50_over_round_robin(rows)
    assert ratios["round_robin"] == 1.0
    assert ratios["prefix_affinity"] == pytest.approx(
        doc["prefix_affinity_over_round_robin_ttft_p50"]
    )
    assert round(ratios["prefix_affinity"], 2) == 0.23
    # the earlier run, file order prefix_affinity first: reordered, ratio 1.09
    earlier = load("routing-2026-11-29.json")
    assert earlier["policies"][0]["policy"] == "prefix_affinity"
    earlier_rows = policy_rows(earlier)
    assert [row.policy for row in earlier_rows] == list(plot_results.POLICIES)
    assert round(p50_over_round_robin(earlier_rows)["prefix_affinity"], 2) == 1.09


def test_vllm_rows_match_the_docs_table() -> None:
    doc = load("vllm-vs-direct-2026-11-29.json")
    one, eight = vllm_rows(doc)
    assert (one.concurrency, eight.concurrency) == (1, 8)
    assert (round(one.direct_tok_s, 1), round(one.aiforge_tok_s, 1)) == (13.5, 13.5)
    assert (round(eight.direct_tok_s, 1), round(eight.aiforge_tok_s, 1)) == (45.1, 44.6)
    assert (round(one.ratio, 3), round(eight.ratio, 3)) == (0.997, 0.989)
    assert eight.ratio == pytest.approx(doc["rows"][1]["tok_s_ratio"])


def test_without_matplotlib_it_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(plot_results, "matplotlib_missing", lambda: True)
    with pytest.raises(SystemExit) as exit_info:
        plot_results.main(["--out", str(tmp_path)])
    assert "pip install 'aiforge[bench]'" in str(exit_info.value.code)
    assert not any(tmp_path.iterdir())


def test_render_writes_a_small_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    (plot,) = [plot for plot in PLOTS if plot.name.startswith("vllm-vs-direct")]
    path = render(plot, RESULTS, tmp_path / "img")
    data = path.read_bytes()
    assert path == tmp_path / "img" / "vllm-vs-direct-2026-11-29.png"
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    assert struct.unpack(">II", data[16:24]) == (900, 450)
    assert len(data) < 80 * 1024
