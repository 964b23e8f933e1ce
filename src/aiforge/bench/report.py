"""How ``aiforge bench`` shows its results: a progress bar, a table and a JSON document.

The JSON document (:func:`result_document`, described by :data:`RESULT_SCHEMA`) holds
everything needed to recompute any number later: the configuration, the machine (with
its load average at the start and the end: a loaded machine distorts latencies), and per
load level its summary and every request's sample.
"""

from __future__ import annotations

import math
import os
import platform
import socket
import sys
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from aiforge import __version__
from aiforge.bench.runner import RunResult
from aiforge.bench.schedule import Load
from aiforge.bench.stats import SLO, Distribution, LoadSummary, RequestSample, summarize

__all__ = ["RESULT_SCHEMA", "SCHEMA_ID", "RichProgress", "render_table", "result_document"]

SCHEMA_ID = "aiforge-bench/1"


class RichProgress:
    """A rich progress bar on stderr, one per level: requests done (of the total, or
    the time elapsed when the level is bounded by a duration) and errors so far."""

    def __init__(self, console: Console | None = None) -> None:
        self._console = console or Console(stderr=True)
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._errors = 0

    def start(self, label: str, *, total: int | None, duration_s: float | None) -> None:
        self._errors = 0
        self._bar = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("errors {task.fields[errors]}"), TimeElapsedColumn(),
            console=self._console,
        )  # fmt: skip
        description = label if duration_s is None else f"{label} ({duration_s:g}s)"
        self._task = self._bar.add_task(description, total=total, errors=0)
        self._bar.start()

    def advance(self, sample: RequestSample) -> None:
        if self._bar is None or self._task is None:
            return
        self._errors += 0 if sample.ok else 1
        self._bar.update(self._task, advance=1, errors=self._errors)

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
        self._bar, self._task = None, None


# -- the table -------------------------------------------------------------------------------


def _triple(distribution: Distribution | None, scale: float, digits: int) -> str:
    """``p50/p90/p99`` of ``distribution`` times ``scale``, or ``-`` without one."""
    if distribution is None:
        return "-"
    values = (distribution.p50, distribution.p90, distribution.p99)
    return "/".join(f"{value * scale:.{digits}f}" for value in values)


def render_table(levels: Sequence[tuple[Load, LoadSummary]], *, title: str = "") -> Table:
    """One row per load level: throughput, TTFT and ITL (milliseconds), E2E (seconds)
    at p50/p90/p99, goodput and errors."""
    table = Table(title=title or None, title_justify="left")
    table.add_column("load")
    for header in ("req/s", "out tok/s", "TTFT ms", "ITL ms", "E2E s", "goodput", "errors"):
        table.add_column(header, justify="right")
    table.add_row("", "", "", *(["p50/p90/p99"] * 3), "req/s (%)", "", style="dim")
    for load, s in levels:
        goodput = "-"
        if s.goodput_per_s is not None and s.good_fraction is not None:
            goodput = f"{s.goodput_per_s:.2f} ({s.good_fraction:.0%})"
        table.add_row(
            load.label, f"{s.requests_per_s:.2f}", f"{s.output_tokens_per_s:.1f}",
            _triple(s.ttft, 1000.0, 0), _triple(s.itl, 1000.0, 0), _triple(s.e2e, 1.0, 2),
            goodput, f"{s.errors}/{s.requests}",
        )  # fmt: skip
    return table


# -- the JSON document -----------------------------------------------------------------------


def _finite(values: Sequence[float]) -> list[float | None]:
    return [v if math.isfinite(v) else None for v in values]


def machine_info(run: RunResult) -> dict[str, Any]:
    """The client machine: where the numbers were measured from, and how busy it was."""
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
        "aiforge": __version__,
        "load_average_start": _finite(run.load_average_start),
        "load_average_end": _finite(run.load_average_end),
    }


def _load_json(load: Load) -> dict[str, Any]:
    return {"kind": load.kind, "value": load.value, "max_concurrency": load.max_concurrency,
            "label": load.label}  # fmt: skip


def _sample_json(sample: RequestSample) -> dict[str, Any]:
    return {**asdict(sample), "itl_s": list(sample.itl_s)}


def result_document(
    run: RunResult, config: dict[str, Any], slo: SLO | None = None
) -> dict[str, Any]:
    """The whole run as JSON-ready data (see :data:`RESULT_SCHEMA`)."""
    levels = []
    for level in run.levels:
        summary = summarize(level.samples, slo)
        levels.append({
            "load": _load_json(level.load),
            "summary": asdict(summary),
            "samples": [_sample_json(s) for s in level.samples],
        })  # fmt: skip
    warm_errors = sum(1 for s in run.warmup if not s.ok)
    return {
        "schema": SCHEMA_ID,
        "created": datetime.fromtimestamp(run.started_at, UTC).isoformat(),
        "wall_s": run.wall_s,
        "config": config,
        "slo": asdict(slo) if slo is not None and not slo.empty else None,
        "machine": machine_info(run),
        "warmup": {"requests": len(run.warmup), "errors": warm_errors},
        "levels": levels,
    }


_NUMBER_OR_NULL = {"type": ["number", "null"]}
_DISTRIBUTION = {
    "type": ["object", "null"],
    "required": ["count", "mean", "p50", "p90", "p99", "min", "max"],
    "properties": {k: {"type": "number"} for k in ("mean", "p50", "p90", "p99", "min", "max")},
}
_SUMMARY_NUMBERS = ("duration_s", "requests_per_s", "output_tokens_per_s", "mean_concurrency")
RESULT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "aiforge bench results",
    "type": "object",
    "required": ["schema", "created", "config", "slo", "machine", "warmup", "levels"],
    "properties": {
        "schema": {"const": SCHEMA_ID},
        "created": {"type": "string"},
        "config": {"type": "object"},
        "machine": {
            "type": "object",
            "required": ["cpu_count", "load_average_start", "load_average_end"],
        },
        "levels": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["load", "summary", "samples"],
                "properties": {
                    "load": {"type": "object", "required": ["kind", "value", "label"]},
                    "summary": {
                        "type": "object",
                        "required": [
                            "requests",
                            "completed",
                            "errors",
                            "ttft",
                            "itl",
                            "e2e",
                            "goodput_per_s",
                            *_SUMMARY_NUMBERS,
                        ],
                        "properties": {
                            **{k: {"type": "number"} for k in _SUMMARY_NUMBERS},
                            **{k: _DISTRIBUTION for k in ("ttft", "itl", "tpot", "e2e")},
                            "goodput_per_s": _NUMBER_OR_NULL,
                        },
                    },
                    "samples": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": [
                                "index",
                                "start_s",
                                "e2e_s",
                                "ttft_s",
                                "itl_s",
                                "output_tokens",
                                "error",
                            ],
                            "properties": {
                                "ttft_s": _NUMBER_OR_NULL,
                                "itl_s": {"type": "array", "items": {"type": "number"}},
                                "error": {"type": ["string", "null"]},
                            },
                        },
                    },
                },
            },
        },
    },
}
"""A JSON Schema of :func:`result_document`'s output (the main fields; more may appear)."""
