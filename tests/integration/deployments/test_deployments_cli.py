"""``aiforge deploy|apply|scale|status|undeploy`` against a running admin API."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import typer
from deployments_support import ServedPlatform
from typer.testing import CliRunner

from aiforge.cli import deploy, status


class Cli:
    def __init__(self, served: ServedPlatform, data_dir: Path) -> None:
        self.app = typer.Typer()
        deploy.register(self.app)
        status.register(self.app)
        self.env = {"AIFORGE_DATA_DIR": str(data_dir), "AIFORGE_URL": served.url, "COLUMNS": "250"}
        self.admin_key = served.admin_key

    async def run(self, *args: str, key: str | None = None, code: int = 0) -> Any:
        """Run in a worker thread (the server runs on this test's event loop)."""
        env = {**self.env, "AIFORGE_API_KEY": key or self.admin_key}
        result = await asyncio.to_thread(CliRunner().invoke, self.app, list(args), env=env)
        assert result.exit_code == code, (args, result.output)
        return result


MANIFEST = """\
deployments:
  - name: Qwen/Qwen3-0.6B
    model: Qwen/Qwen3-0.6B
    replicas: 2
    policy: prefix_affinity
  - name: embed
    model: Qwen/Qwen3-Embedding-0.6B
    engine_args: --max-num-seqs 4
"""


async def test_a_fleet_from_the_command_line(served: ServedPlatform, tmp_path: Path) -> None:
    cli = Cli(served, tmp_path)
    created = await cli.run("deploy", "demo", "--replicas", "2")
    assert "deployment 'demo' created" in created.stdout
    manifest = tmp_path / "deployments.yaml"
    manifest.write_text(MANIFEST)

    first = await cli.run("apply", "-f", str(manifest))
    assert first.stdout.splitlines() == [
        "deployment/Qwen/Qwen3-0.6B created",
        "deployment/embed created",
    ]
    again = await cli.run("apply", "-f", str(manifest))
    assert again.stdout.count("unchanged") == 2
    assert served.runtime.deployments.get("embed").spec.engine_args == ("--max-num-seqs", "4")
    assert served.runtime.deployments.get("embed").generation == 1

    await cli.run("scale", "Qwen/Qwen3-0.6B", "3")
    assert served.runtime.deployments.get("Qwen/Qwen3-0.6B").spec.replicas == 3
    served.control_plane.replicas["Qwen/Qwen3-0.6B"] = [
        {"id": "qwen-1", "state": "ready", "engine": "vllm", "pid": 777, "in_flight": 2,
         "tokens_per_s": 12.5, "uptime_s": 65.0, "restarts": 1, "last_error": None},
    ]  # fmt: skip
    table = (await cli.run("status")).stdout
    for expected in ("demo", "embed", "qwen-1", "pid 777", "1/3 ready", "1m05s", "0/2 ready"):
        assert expected in table, expected
    listing = json.loads((await cli.run("status", "--json")).stdout)
    assert [row["name"] for row in listing] == ["Qwen/Qwen3-0.6B", "demo", "embed"]

    pruned = await cli.run("apply", "-f", str(manifest), "--prune")
    assert "deployment/demo deleted" in pruned.stdout
    removed = await cli.run("undeploy", "embed")
    assert "deleted" in removed.stdout
    names = [spec.name for spec in await served.runtime.deployments.list_deployments()]
    assert names == ["Qwen/Qwen3-0.6B"]


async def test_refusals_are_printed_and_exit_non_zero(
    served: ServedPlatform, tmp_path: Path
) -> None:
    cli = Cli(served, tmp_path)
    _, project_key = await served.project_key("web")
    refused = await cli.run("deploy", "demo", key=project_key, code=1)
    assert "only a platform admin key can manage deployments" in refused.stderr
    unknown = await cli.run("deploy", "demo", "--project", "proj_missing", code=1)
    assert "no project with id proj_missing" in unknown.stderr
    missing = await cli.run("undeploy", "nope", code=1)
    assert "deployment 'nope' not found" in missing.stderr
    assert await served.runtime.deployments.list_deployments() == []
