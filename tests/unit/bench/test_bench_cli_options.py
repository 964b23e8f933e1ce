"""``aiforge bench`` refuses bad options with a usage error before sending anything."""

import pytest
from typer.testing import CliRunner

from aiforge.cli import _register_commands, app

_register_commands()
NOWHERE = ["bench", "--base-url", "http://127.0.0.1:9/v1", "--model", "m"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--concurrency", "2", "--rate", "1"], "not both"),
        (["--rate", "1", "--sweep", "1,2"], "--rate or --sweep"),
        (["--concurrency", "0"], "positive"),
        (["--prompt-tokens", "lots"], "bad length"),
        (["--output-tokens", "random:9-3"], "bad length"),
        (["--slo", "ttft=soon"], "bad SLO"),
        (["--slo", "ttft=1s", "--no-stream"], "need streaming"),
        (["--workload", "chat", "--endpoint", "completions"], "needs --endpoint chat"),
        (["--workload", "chat", "--prompt-tokens", "normal:50,5"], "user turns take"),
        (["--extra-body", "[1]"], "JSON object"),
        (["--extra-body", "{oops"], "not JSON"),
        (["--tokenizer", "/nonexistent/tokenizer"], "no tokenizer.json"),
        (["--requests", "0"], "--requests"),
        (["--endpoint", "embeddings"], "--endpoint"),
    ],
)
def test_bad_options_are_usage_errors(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, [*NOWHERE, *args])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())


def test_an_unreachable_server_without_a_model_is_a_clear_error() -> None:
    result = CliRunner().invoke(app, ["bench", "--base-url", "http://127.0.0.1:9/v1"])
    assert result.exit_code == 1
    assert "cannot list the models at http://127.0.0.1:9/v1" in " ".join(result.output.split())


def test_help_names_every_mode() -> None:
    result = CliRunner().invoke(app, ["bench", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for flag in ("--concurrency", "--rate", "--sweep", "--workload", "--slo", "--plot", "--out"):
        assert flag in result.output


def test_the_admin_key_goes_only_to_the_local_aiforge(monkeypatch: pytest.MonkeyPatch) -> None:
    from aiforge.cli.bench import _target

    monkeypatch.setenv("AIFORGE_ADMIN_KEY", "sk-admin-secret")
    monkeypatch.setenv("AIFORGE_PORT", "18999")
    local = _target(None, None, None)
    assert local.base_url == "http://127.0.0.1:18999/v1"
    assert local.api_key == "sk-admin-secret"
    assert _target(None, None, "sk-mine").api_key == "sk-mine"
    elsewhere = _target("https://api.example.com/v1/", "m", None)
    assert elsewhere.base_url == "https://api.example.com/v1"
    assert elsewhere.api_key is None
