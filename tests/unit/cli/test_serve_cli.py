"""``aiforge serve`` options, through typer's CliRunner with the service itself stubbed out
(what it would run is recorded instead)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from aiforge.cli import serve
from aiforge.config import Settings
from aiforge.engines.server.main import parse_args


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Settings, dict[str, str]]]:
    """The settings ``run_service`` was called with, and the environment replicas inherit."""
    calls: list[tuple[Settings, dict[str, str]]] = []

    async def record(settings: Settings, options: serve.ServeOptions) -> None:
        calls.append((settings, dict(os.environ)))

    monkeypatch.setattr(serve, "run_service", record)
    monkeypatch.delenv("AIFORGE_PREFIX_CACHE", raising=False)
    return calls


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()
    serve.register(app)
    app.command("noop", hidden=True)(lambda: None)  # keeps `serve` a named subcommand
    return app


def _serve(app: typer.Typer, tmp_path: Path, *args: str) -> None:
    # env: CliRunner restores these variables afterwards, whatever serve set.
    env = {"AIFORGE_PREFIX_CACHE": None, "AIFORGE_DATA_DIR": str(tmp_path)}
    result = CliRunner().invoke(app, ["serve", "--model", "demo", *args], env=env)
    assert result.exit_code == 0, result.output


def test_no_prefix_cache_reaches_the_replicas(
    app: typer.Typer, tmp_path: Path, started: list[tuple[Settings, dict[str, str]]]
) -> None:
    _serve(app, tmp_path, "--no-prefix-cache")
    ((settings, environment),) = started
    assert settings.prefix_cache is False
    assert environment["AIFORGE_PREFIX_CACHE"] == "false"
    # What a replica started with that environment makes of it: no resident sequences.
    os.environ["AIFORGE_PREFIX_CACHE"] = environment["AIFORGE_PREFIX_CACHE"]
    try:
        args = parse_args(["--model", "m"])
    finally:
        del os.environ["AIFORGE_PREFIX_CACHE"]
    assert args.prefix_cache_sequences == 0


def test_prefix_caching_stays_on_by_default(
    app: typer.Typer, tmp_path: Path, started: list[tuple[Settings, dict[str, str]]]
) -> None:
    _serve(app, tmp_path)
    ((settings, environment),) = started
    assert settings.prefix_cache is True
    assert "AIFORGE_PREFIX_CACHE" not in environment
