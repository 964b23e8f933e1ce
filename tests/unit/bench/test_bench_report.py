import json
import math
from pathlib import Path

import jsonschema
import pytest
from rich.console import Console

from aiforge.bench.plot import write_plot
from aiforge.bench.report import RESULT_SCHEMA, SCHEMA_ID, render_table, result_document
from aiforge.bench.runner import LevelResult, RunResult
from aiforge.bench.schedule import Load
from aiforge.bench.stats import SLO, RequestSample, summarize

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def level(load: Load, scale: float) -> LevelResult:
    samples = [
        RequestSample(
            index=i,
            start_s=i * 0.1,
            e2e_s=scale,
            ttft_s=scale / 4,
            itl_s=(scale / 10,) * 3,
            output_tokens=4,
            prompt_tokens=20,
        )
        for i in range(5)
    ]
    samples.append(RequestSample(index=5, start_s=0.6, e2e_s=0.01, error="HTTP 500: boom"))
    return LevelResult(load, samples, wall_s=1.0)


def run_of(*levels: LevelResult) -> RunResult:
    return RunResult(
        warmup=[RequestSample(index=0, start_s=0.0, e2e_s=0.1)], levels=list(levels),
        load_average_start=(0.5, 0.4, 0.3), load_average_end=(math.nan, 0.4, 0.3),
        started_at=1_700_000_000.0, wall_s=3.0,
    )  # fmt: skip


RUN = run_of(level(Load("rate", 1.0), 0.4), level(Load("rate", 4.0), 0.8))


def test_the_document_follows_its_schema_and_is_strict_json() -> None:
    document = result_document(RUN, {"model": "m"}, SLO(ttft_s=0.15))
    jsonschema.validate(document, RESULT_SCHEMA)
    text = json.dumps(document, allow_nan=False)  # NaN is not JSON: none may slip in
    back = json.loads(text)
    assert back["schema"] == SCHEMA_ID
    assert back["machine"]["load_average_start"] == [0.5, 0.4, 0.3]
    assert back["machine"]["load_average_end"][0] is None
    assert back["warmup"] == {"requests": 1, "errors": 0}
    assert back["slo"]["ttft_s"] == 0.15
    first = back["levels"][0]
    assert first["load"] == {"kind": "rate", "value": 1.0, "max_concurrency": None,
                             "label": "rate 1/s"}  # fmt: skip
    assert len(first["samples"]) == 6
    assert first["samples"][0]["itl_s"] == [0.04, 0.04, 0.04]
    assert first["summary"]["errors"] == 1
    assert first["summary"]["goodput_per_s"] > 0
    assert back["levels"][1]["summary"]["goodput_per_s"] == 0.0  # TTFT 0.2 > 0.15
    assert first["summary"]["ttft"]["p50"] == 0.1


def test_the_schema_catches_a_broken_document() -> None:
    document = result_document(RUN, {})
    del document["levels"][0]["summary"]["ttft"]
    with pytest.raises(jsonschema.ValidationError, match="ttft"):
        jsonschema.validate(document, RESULT_SCHEMA)


def test_the_table_has_a_row_per_level_with_milliseconds_and_errors() -> None:
    levels = [(lvl.load, summarize(lvl.samples, SLO(e2e_s=0.5))) for lvl in RUN.levels]
    console = Console(width=160, record=True)
    console.print(render_table(levels, title="demo"))
    text = console.export_text()
    assert "rate 1/s" in text
    assert "rate 4/s" in text
    assert "100/100/100" in text  # TTFT ms of the first level
    assert "0.40/0.40/0.40" in text  # E2E s
    assert "1/6" in text  # errors
    assert "(83%)" in text  # goodput of the first level: 5 of 6


def test_the_plot_is_a_png(tmp_path: Path) -> None:
    levels = [(lvl.load, summarize(lvl.samples, SLO(e2e_s=0.5))) for lvl in RUN.levels]
    for name, chosen in (("sweep.png", levels), ("one.png", levels[:1])):
        path = tmp_path / name
        write_plot(chosen, path, title="t")
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC)
        assert len(data) > 10_000


def test_a_plot_of_a_level_without_successes_still_draws(tmp_path: Path) -> None:
    failed = LevelResult(Load("concurrency", 2), [RequestSample(0, 0.0, 0.1, error="x")], 1.0)
    path = tmp_path / "failed.png"
    write_plot([(failed.load, summarize(failed.samples))], path)
    assert path.read_bytes().startswith(PNG_MAGIC)
