"""``aiforge bench`` as users run it: the real command in a subprocess, against the paced
fake server (whose timings are known, so the statistics can be checked) and against a real
``aiforge serve``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from aiforge.bench.fake_server import Pace, paced_openai_app, serving_in_thread
from aiforge.bench.report import RESULT_SCHEMA
from aiforge.testing.models import qwen3_tokenizer_dir
from aiforge.testing.server import CLI_MODULE, RemoteAiforgeServer

TTFT, ITL, TOKENS = 0.1, 0.02, 8
E2E = TTFT + (TOKENS - 1) * ITL
# Wide enough for a loaded 2-core machine: nothing can be faster than the fake's pace,
# but anything can be slower.
SLACK = 0.25


@pytest.fixture
def paced() -> Iterator[tuple[str, Pace]]:
    pace = Pace(ttft_s=TTFT, itl_s=ITL, fail_every=5)
    with serving_in_thread(paced_openai_app(pace)) as url:
        yield url + "/v1", pace


def bench(*args: str, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", CLI_MODULE, "bench", *args],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, "COLUMNS": "160"},
    )  # fmt: skip


def levels_of(path: Path) -> list[dict[str, Any]]:
    document = json.loads(path.read_text())
    jsonschema.validate(document, RESULT_SCHEMA)
    levels: list[dict[str, Any]] = document["levels"]
    return levels


def test_a_concurrency_sweep_measures_the_fakes_pace(
    paced: tuple[str, Pace], tmp_path: Path
) -> None:
    url, pace = paced
    out, plot = tmp_path / "results.json", tmp_path / "plot.png"
    done = bench(
        "--base-url", url, "--api-key", "sk-x", "--concurrency", "1,4", "--requests", "20",
        "--warmup", "2", "--output-tokens", str(TOKENS), "--prompt-tokens", "random:10-30",
        "--slo", f"ttft={TTFT + SLACK}s", "--out", str(out), "--plot", str(plot),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "concurrency 1" in done.stdout
    assert "concurrency 4" in done.stdout
    assert "HTTP 500: paced fake: planned failure" in done.stdout
    assert pace.requests == 42
    one, four = levels_of(out)
    for level in (one, four):
        summary = level["summary"]
        # Requests 3-22 and 23-42 of the fake (after two warm-ups): every fifth fails.
        assert (summary["requests"], summary["completed"], summary["errors"]) == (20, 16, 4)
        assert TTFT <= summary["ttft"]["p50"] < TTFT + SLACK
        assert ITL / 2 <= summary["itl"]["p50"] < ITL + SLACK / 5
        assert E2E <= summary["e2e"]["p50"] < E2E + SLACK
        assert summary["output_tokens"] == 16 * TOKENS
        assert summary["goodput_per_s"] <= summary["requests_per_s"]
        samples = level["samples"]
        assert len(samples) == 20
        assert all(s["output_tokens"] == TOKENS and s["tokens_from"] == "usage"
                   for s in samples if s["error"] is None)  # fmt: skip
    # One at a time, a request can't finish faster than E2E: at most TOKENS / E2E tokens/s.
    assert one["summary"]["output_tokens_per_s"] <= TOKENS / E2E * 1.01
    assert one["summary"]["output_tokens_per_s"] >= TOKENS / (E2E + SLACK) * 0.8 * 0.8
    assert four["summary"]["output_tokens_per_s"] <= 4 * TOKENS / E2E * 1.01
    assert four["summary"]["output_tokens_per_s"] > 1.5 * one["summary"]["output_tokens_per_s"]
    data = plot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 10_000


def test_a_chat_workload_at_a_poisson_rate(paced: tuple[str, Pace], tmp_path: Path) -> None:
    url, pace = paced
    pace.fail_every = 0
    out = tmp_path / "chat.json"
    done = bench(
        "--base-url", url, "--model", "paced", "--workload", "chat", "--rate", "20",
        "--requests", "12", "--warmup", "0", "--turns", "3", "--system-prompts", "2",
        "--system-tokens", "60", "--prompt-tokens", "12", "--output-tokens", "4",
        "--tokenizer", str(qwen3_tokenizer_dir()), "--seed", "3", "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (level,) = levels_of(out)
    assert level["load"]["kind"] == "rate"
    samples = level["samples"]
    assert len(samples) == 12
    assert sorted((s["conversation"], s["turn"]) for s in samples) == [
        (c, t) for c in range(4) for t in range(3)
    ]
    assert all(s["scheduled_s"] is not None for s in samples)
    assert all(s["start_s"] >= s["scheduled_s"] for s in samples)
    # Each later turn resends the history: the fake counts more prompt words.
    by_turn = {(s["conversation"], s["turn"]): s["prompt_tokens"] for s in samples}
    assert all(by_turn[(c, 2)] > by_turn[(c, 1)] > by_turn[(c, 0)] for c in range(4))


def test_every_request_failing_exits_1(paced: tuple[str, Pace], tmp_path: Path) -> None:
    url, pace = paced
    pace.fail_every = 1
    done = bench("--base-url", url, "--model", "paced", "-n", "3", "--warmup", "0")
    assert done.returncode == 1
    assert "3 × HTTP 500" in done.stdout


@pytest.mark.parametrize("server", ["transformers"], indirect=True)
def test_against_a_real_aiforge_serve(server: RemoteAiforgeServer, tmp_path: Path) -> None:
    out = tmp_path / "aiforge.json"
    done = bench(
        "--base-url", server.base_url, "--api-key", server.api_key, "-c", "2", "-n", "4",
        "--warmup", "1", "--prompt-tokens", "16", "--output-tokens", "4", "--ignore-eos",
        "--tokenizer", str(qwen3_tokenizer_dir()), "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (level,) = levels_of(out)
    summary = level["summary"]
    assert summary["errors"] == 0, summary["error_kinds"]
    assert summary["output_tokens"] == 4 * 4
    assert summary["ttft"]["count"] == 4
    assert all(s["tokens_from"] == "usage" for s in level["samples"])
    assert json.loads(out.read_text())["config"]["model"] == "tiny"
