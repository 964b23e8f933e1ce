"""``aiforge deploy|scale|undeploy|apply|status`` against a fake admin API (no server)."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from aiforge.cli import deploy, status
from aiforge.cli.status import format_uptime, status_table, watch
from aiforge.platform.api.client import AdminApiClient, AdminApiError


class FakeAdminApi:
    """Deployments kept as sent; records every request."""

    def __init__(self) -> None:
        self.specs: dict[str, dict[str, Any]] = {}
        self.replicas: dict[str, list[dict[str, Any]]] = {}
        self.requests: list[tuple[str, str, Any]] = []

    def public(self, name: str) -> dict[str, Any]:
        replicas = self.replicas.get(name, [])
        ready = sum(1 for r in replicas if r["state"] == "ready")
        return {
            "name": name,
            "spec": self.specs[name],
            "ready_replicas": ready,
            "replicas": replicas,
        }

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body: Any = json.loads(request.content) if request.content else None
        path = request.url.path
        self.requests.append((request.method, path, body))
        name = path.removeprefix("/admin/v1/deployments").strip("/")
        if request.method == "GET" and not name:
            return httpx.Response(200, json=[self.public(n) for n in sorted(self.specs)])
        if request.method == "PUT":
            result = "created" if name not in self.specs else "updated"
            if self.specs.get(name) == body:
                result = "unchanged"
            self.specs[name] = body
            return httpx.Response(201, json={**self.public(name), "result": result})
        if request.method == "POST" and name.endswith("/scale"):
            name = name.removesuffix("/scale")
            if name not in self.specs:
                return httpx.Response(
                    404, json={"error": {"message": f"deployment {name!r} not found"}}
                )
            self.specs[name]["replicas"] = body["replicas"]
            return httpx.Response(200, json=self.public(name))
        if request.method == "DELETE":
            self.specs.pop(name)
            return httpx.Response(204)
        return httpx.Response(404, json={"error": {"message": "no route"}})


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> FakeAdminApi:
    fake = FakeAdminApi()
    client = functools.partial(AdminApiClient, transport=httpx.MockTransport(fake))
    monkeypatch.setattr("aiforge.cli.admin.AdminApiClient", client)
    return fake


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()
    deploy.register(app)
    status.register(app)
    return app


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "AIFORGE_API_KEY": "sk-test",
        "AIFORGE_URL": "http://aiforge.test",
        "AIFORGE_DATA_DIR": str(tmp_path / "data"),
        "COLUMNS": "250",
    }


@pytest.fixture
def run(app: typer.Typer, env: dict[str, str]) -> Any:
    def invoke(*args: str, code: int = 0, stdin: str | None = None) -> Any:
        result = CliRunner().invoke(app, list(args), env=env, input=stdin)
        assert result.exit_code == code, (args, result.output)
        return result

    return invoke


# -- deploy / scale / undeploy ---------------------------------------------------------
def test_deploy_sends_the_whole_spec_with_defaults_filled_in(api: FakeAdminApi, run: Any) -> None:
    result = run(
        "deploy",
        "Qwen/Qwen3-0.6B",
        "--replicas",
        "2",
        "--policy",
        "prefix_affinity",
        "--engine",
        "vllm",
        "--engine-arg=--enable-prefix-caching",
        "--engine-arg",
        "--max-num-seqs 8",
        "--region",
        "eu-west",
        "--label",
        "gpu=h100",
        "--project",
        "proj_a",
    )
    assert "deployment 'Qwen/Qwen3-0.6B' created" in result.stdout
    method, path, body = api.requests[-1]
    assert (method, path) == ("PUT", "/admin/v1/deployments/Qwen/Qwen3-0.6B")
    assert body["engine_args"] == ["--enable-prefix-caching", "--max-num-seqs", "8"]
    assert body["placement"] == {"regions": ["eu-west"], "node_labels": {"gpu": "h100"}}
    assert body["projects"] == ["proj_a"]
    assert (body["replicas"], body["policy"], body["dtype"]) == (2, "prefix_affinity", "auto")

    again = run("deploy", "Qwen/Qwen3-0.6B", "--replicas", "2", "--policy", "prefix_affinity",
                "--engine", "vllm", "--engine-arg=--enable-prefix-caching",
                "--engine-arg", "--max-num-seqs 8", "--region", "eu-west", "--label", "gpu=h100",
                "--project", "proj_a")  # fmt: skip
    assert "unchanged" in again.stdout


def test_deploy_names_a_model_as_it_will_be_served(
    api: FakeAdminApi, run: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run("deploy", "demo")
    assert api.requests[-1][1] == "/admin/v1/deployments/demo"
    local = tmp_path / "models" / "my-model"
    local.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    run("deploy", "models/my-model")
    _, path, body = api.requests[-1]
    assert path == "/admin/v1/deployments/my-model"
    assert body["model"] == str(local)  # made absolute: the server has another cwd
    run("deploy", "demo", "--name", "team/chat", "--json")
    assert api.requests[-1][1] == "/admin/v1/deployments/team/chat"


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--policy", "fastest"], "policy: unknown routing policy 'fastest'"),
        (["--engine", "tensorrt"], "engine: unknown engine 'tensorrt'"),
        (["--name", "has space"], "name: invalid deployment name"),
        (["--label", "novalue"], "KEY=VALUE"),
    ],
)
def test_deploy_refuses_a_bad_spec_before_sending_it(
    api: FakeAdminApi, run: Any, args: list[str], words: str
) -> None:
    result = run("deploy", "demo", *args, code=2)
    assert words in " ".join(result.output.split())
    assert api.requests == []


def test_scale_and_undeploy(api: FakeAdminApi, run: Any) -> None:
    api.specs["Qwen/Qwen3-0.6B"] = {"replicas": 1}
    api.replicas["Qwen/Qwen3-0.6B"] = [{"state": "ready"}]
    scaled = run("scale", "Qwen/Qwen3-0.6B", "3")
    assert "3 replica(s) wanted, 1 ready now" in scaled.stdout
    assert api.requests[-1] == (
        "POST",
        "/admin/v1/deployments/Qwen/Qwen3-0.6B/scale",
        {"replicas": 3},
    )
    missing = run("scale", "nope", "1", code=1)
    assert "deployment 'nope' not found" in missing.stderr
    negative = run("scale", "Qwen/Qwen3-0.6B", "--", "-1", code=2)
    assert "greater than or equal to 0" in " ".join(negative.output.split())
    deleted = run("undeploy", "Qwen/Qwen3-0.6B")
    assert "deleted" in deleted.stdout
    assert api.specs == {}


# -- apply -f ---------------------------------------------------------------------------
MANIFEST = """\
deployments:
  - name: chat
    model: Qwen/Qwen3-0.6B
    replicas: 2
  - name: embed
    model: Qwen/Qwen3-Embedding-0.6B
"""


def test_apply_creates_then_reports_unchanged_and_prunes(
    api: FakeAdminApi, run: Any, tmp_path: Path
) -> None:
    manifest = tmp_path / "deployments.yaml"
    manifest.write_text(MANIFEST)
    first = run("apply", "-f", str(manifest))
    assert first.stdout.splitlines() == ["deployment/chat created", "deployment/embed created"]
    second = run("apply", "-f", str(manifest))
    assert second.stdout.splitlines() == [
        "deployment/chat unchanged",
        "deployment/embed unchanged",
    ]
    api.specs["old"] = {"name": "old", "model": "demo", "replicas": 1}
    kept = run("apply", "-f", str(manifest))
    assert "old" in api.specs
    assert "old" not in kept.stdout
    pruned = json.loads(run("apply", "-f", "-", "--prune", "--json", stdin=MANIFEST).stdout)
    assert pruned[-1] == {"name": "old", "result": "deleted"}
    assert sorted(api.specs) == ["chat", "embed"]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (
            "deployments:\n  - name: a\n    model: demo\n    replicas: -1\n",
            "line 4: deployment 'a'",
        ),
        ("deployments:\n  - name: a\n    model: demo\n    polcy: x\n", "unknown field 'polcy'"),
        ("deployments:\n  - name: a\n", "line 2: deployment 'a': model is required"),
        ("deployments: [\n", "not valid YAML"),
    ],
)
def test_apply_names_the_line_and_field_of_a_bad_manifest_and_sends_nothing(
    api: FakeAdminApi, run: Any, tmp_path: Path, text: str, words: str
) -> None:
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(text)
    result = run("apply", "-f", str(manifest), code=2)
    assert words in " ".join(result.stderr.split())
    assert str(manifest.name) in result.stderr
    assert api.requests == []


def test_apply_of_a_missing_file_says_so(api: FakeAdminApi, run: Any, tmp_path: Path) -> None:
    result = run("apply", "-f", str(tmp_path / "nope.yaml"), code=2)
    assert "cannot read" in result.stderr


# -- status -----------------------------------------------------------------------------
def _listing() -> list[dict[str, Any]]:
    spec = {"model": "Qwen/Qwen3-0.6B", "engine": "auto", "policy": "round_robin", "replicas": 2}
    replicas = [
        {"id": "chat-a1", "state": "ready", "engine": "transformers", "pid": 4242,
         "node": None, "in_flight": 3, "tokens_per_s": 41.5, "uptime_s": 3725.0,
         "restarts": 0, "last_error": None},
        {"id": "chat-b2", "state": "failed", "engine": "transformers", "pid": None,
         "node": "node-1", "in_flight": 0, "tokens_per_s": 0.0, "uptime_s": 0.0,
         "restarts": 5, "last_error": "CUDA out of memory\n" + "x" * 200},
    ]  # fmt: skip
    return [{"name": "chat", "spec": spec, "ready_replicas": 1, "replicas": replicas}]


def test_status_table_shows_deployments_and_their_replicas() -> None:
    console = Console(width=250, record=True)
    console.print(status_table(_listing()))
    text = console.export_text()
    for expected in (
        "chat",
        "Qwen/Qwen3-0.6B",
        "round_robin",
        "1/2 ready",
        "chat-a1",
        "pid 4242",
        "41.5",
        "1h02m",
        "node-1",
        "failed",
        "CUDA out of memory x",
    ):
        assert expected in text, expected
    assert "x" * 100 not in text  # the last error is truncated


def test_status_prints_json_or_a_table(api: FakeAdminApi, run: Any) -> None:
    assert "no deployments" in run("status").stdout
    api.specs["chat"] = _listing()[0]["spec"]
    api.replicas["chat"] = _listing()[0]["replicas"]
    table = run("status").stdout
    assert "chat-b2" in table
    data = json.loads(run("status", "--json").stdout)
    assert data[0]["replicas"][0]["pid"] == 4242


def test_watch_redraws_until_ctrl_c_and_survives_a_failed_fetch() -> None:
    fetched: list[int] = []

    def fetch() -> list[dict[str, Any]]:
        fetched.append(1)
        if len(fetched) == 2:
            raise AdminApiError("no aiforge server is answering")
        return _listing()

    naps: list[float] = []

    def sleep(seconds: float) -> None:
        naps.append(seconds)
        if len(naps) == 4:
            raise KeyboardInterrupt

    console = Console(width=200, record=True, force_terminal=False)
    watch(fetch, first=[], console=console, sleep=sleep)
    assert naps == [2.0] * 4
    assert len(fetched) == 3
    assert "chat-a1" in console.export_text()


def test_uptime_is_short() -> None:
    assert [format_uptime(s) for s in (0, 42, 185, 7620, 273600)] == [
        "",
        "42s",
        "3m05s",
        "2h07m",
        "3d04h",
    ]


# -- the server is not running ---------------------------------------------------------------
def test_commands_say_clearly_when_no_server_answers(
    app: typer.Typer, env: dict[str, str], unused_tcp_port: int
) -> None:
    env = {**env, "AIFORGE_URL": f"http://127.0.0.1:{unused_tcp_port}"}
    for args in (["status"], ["scale", "demo", "1"], ["undeploy", "demo"], ["deploy", "demo"]):
        result = CliRunner().invoke(app, args, env=env)
        assert result.exit_code == 1, result.output
        assert "no aiforge server is answering" in result.stderr
        assert "aiforge serve" in result.stderr


@pytest.mark.parametrize("command", ["deploy", "scale", "undeploy", "apply", "status"])
def test_every_command_has_help_with_examples(app: typer.Typer, command: str) -> None:
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0
    assert "Example" in result.output
    assert f"aiforge {command}" in result.output
