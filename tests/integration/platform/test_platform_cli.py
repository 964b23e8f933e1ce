"""``aiforge orgs|projects|users|keys|limits`` against a running admin API."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from aiforge.cli.admin import register


def cli_app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


class Cli:
    def __init__(self, admin: Any, data_dir: Path) -> None:
        self.app = cli_app()
        self.url = str(admin.http.base_url)
        self.env = {"AIFORGE_DATA_DIR": str(data_dir), "AIFORGE_URL": self.url, "COLUMNS": "250"}
        self.admin_key = admin.admin_key

    async def run(self, *args: str, key: str | None = "admin", code: int = 0) -> Any:
        """Run in a worker thread (the server runs on this test's event loop)."""
        env = dict(self.env)
        if key is not None:
            env["AIFORGE_API_KEY"] = self.admin_key if key == "admin" else key
        result = await asyncio.to_thread(CliRunner().invoke, self.app, list(args), env=env)
        assert result.exit_code == code, (args, result.output)
        return result


async def test_provision_a_tenant_from_the_command_line(admin: Any, tmp_path: Path) -> None:
    cli = Cli(admin, tmp_path)

    org = json.loads((await cli.run("orgs", "create", "acme", "--json")).stdout)
    project = json.loads(
        (await cli.run("projects", "create", "web", "--org", org["id"], "--json")).stdout
    )
    created = json.loads(
        (
            await cli.run(
                "keys",
                "create",
                "--project",
                project["id"],
                "--role",
                "admin",
                "--model",
                "qwen3-0.6b",
                "--expires",
                "30d",
                "--name",
                "ci",
                "--json",
            )
        ).stdout
    )
    token = created["key"]
    assert created["allowed_models"] == ["qwen3-0.6b"]
    assert created["expires_at"] is not None

    listing = (await cli.run("keys", "list", "--project", project["id"])).stdout
    assert created["prefix"] in listing
    assert token not in listing
    # A project key finds its own project without --project.
    own = json.loads((await cli.run("keys", "list", "--json", key=token)).stdout)
    assert [row["id"] for row in own] == [created["id"]]

    limits = json.loads(
        (await cli.run("limits", "set", "--key", created["id"], "--rpm", "60", "--json")).stdout
    )
    assert limits["requests_per_minute"] == 60
    assert limits["tokens_per_day"] is None
    shown = (await cli.run("limits", "get", "--key", created["id"])).stdout
    assert "60" in shown

    updated = json.loads(
        (await cli.run("keys", "update", created["id"], "--all-models", "--json")).stdout
    )
    assert updated["allowed_models"] is None
    revoked = json.loads((await cli.run("keys", "revoke", created["id"], "--json")).stdout)
    assert revoked["status"] == "revoked"
    refused = await cli.run("projects", "list", key=token, code=1)
    assert "Incorrect API key" in refused.stderr


async def test_errors_are_clear_and_exit_non_zero(admin: Any, tmp_path: Path) -> None:
    cli = Cli(admin, tmp_path)

    missing = await cli.run("projects", "get", "proj_nope", code=1)
    assert "not found" in missing.stderr
    no_key = await cli.run("orgs", "list", key=None, code=2)
    assert "no API key" in no_key.stderr
    both = await cli.run("limits", "get", code=2)
    assert "exactly one of --key or --project" in both.output


async def test_the_stored_admin_key_is_used_when_none_is_given(admin: Any, tmp_path: Path) -> None:
    cli = Cli(admin, tmp_path)
    (tmp_path / "admin-key").write_text(admin.admin_key + "\n")

    orgs = json.loads((await cli.run("orgs", "list", "--json", key=None)).stdout)
    assert [org["name"] for org in orgs] == ["default"]


@pytest.mark.parametrize("group", ["orgs", "projects", "users", "keys", "limits"])
def test_every_group_has_help(group: str) -> None:
    result = CliRunner().invoke(cli_app(), [group, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.output
