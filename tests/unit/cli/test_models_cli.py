"""``aiforge models`` and ``aiforge pull`` through typer's CliRunner."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from aiforge.cli import models
from aiforge.models.sources import COMPLETE_MARKER


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()
    models.register(app)
    return app


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    return {"AIFORGE_CACHE_DIR": str(tmp_path / "cache"), "AIFORGE_MODEL_SOURCE": "huggingface"}


def test_models_json_lists_the_catalog_with_memory_and_download_state(
    app: typer.Typer, env: dict[str, str], tmp_path: Path
) -> None:
    downloaded = tmp_path / "cache" / "models" / "huggingface" / "Qwen" / "Qwen3-0.6B"
    downloaded.mkdir(parents=True)
    (downloaded / COMPLETE_MARKER).write_text("{}")
    result = CliRunner().invoke(app, ["models", "--json", "--context", "32768"], env=env)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    rows = {row["name"]: row for row in data["models"]}
    assert data["context"] == 32768
    small = rows["qwen3-0.6b"]
    assert small["downloaded"] is True
    assert small["path"] == str(downloaded)
    assert rows["qwen3-8b"]["downloaded"] is False
    # bf16 weights 1,192,099,840 + KV 3,758,096,384 + overhead 656,080,896 (see test_memory)
    # + 4 resident prefix-cache sequences' KV (AIFORGE_PREFIX_CACHE_SEQUENCES) 4 x 3,758,096,384
    assert small["memory_bytes"]["bf16"] == 20_638_662_656
    assert small["memory_bytes"]["int4"] < small["memory_bytes"]["fp8"] < 20_638_662_656
    cache_off = {**env, "AIFORGE_PREFIX_CACHE": "false"}
    result = CliRunner().invoke(app, ["models", "--json", "--context", "32768"], env=cache_off)
    rows = {row["name"]: row for row in json.loads(result.output)["models"]}
    assert rows["qwen3-0.6b"]["memory_bytes"]["bf16"] == 5_606_277_120
    moe = rows["qwen3-30b-a3b"]
    assert moe["params"] > 30e9 > 4e9 > moe["active_params"]
    assert rows["qwen3-vl-8b-instruct"]["modalities"] == ["text", "image", "video"]
    assert rows["qwen3-embedding-4b"]["embedding_dim"] == 2560


def test_models_table_renders(app: typer.Typer, env: dict[str, str]) -> None:
    result = CliRunner().invoke(app, ["models", "--sequences", "4"], env={**env, "COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "qwen3-30b-a3b" in result.output
    assert "active" in result.output
    assert "8,192 tokens × 4 seqs" in result.output


def test_pull_offline_fails_fast_and_says_what_to_do(app: typer.Typer, env: dict[str, str]) -> None:
    start = time.monotonic()
    result = CliRunner().invoke(app, ["pull", "qwen3-0.6b"], env=env)
    assert time.monotonic() - start < 15
    assert result.exit_code == 1
    assert "aiforge serve --model demo" in result.output
    assert "HF_ENDPOINT" in result.output


def test_pull_from_modelscope_without_the_package(app: typer.Typer, env: dict[str, str]) -> None:
    try:
        import modelscope  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("modelscope is installed here")
    result = CliRunner().invoke(app, ["pull", "qwen3-0.6b", "--source", "modelscope"], env=env)
    assert result.exit_code == 1
    assert "modelscope" in result.output


def test_pull_a_cached_model_prints_its_path(
    app: typer.Typer, env: dict[str, str], tmp_path: Path
) -> None:
    target = tmp_path / "cache" / "models" / "huggingface" / "Qwen" / "Qwen3-4B"
    target.mkdir(parents=True)
    (target / COMPLETE_MARKER).write_text("{}")
    result = CliRunner().invoke(app, ["pull", "Qwen/Qwen3-4B"], env=env)
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith(str(target))


def test_help_everywhere(app: typer.Typer) -> None:
    for command in (["models", "--help"], ["pull", "--help"]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 0
        assert "Usage" in result.output
