"""``aiforge chat``: its input rules and reasoning split, then a real run against a replica."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import typer
from typer.testing import CliRunner

from aiforge.cli import chat
from aiforge.cli.chat import Action, ChatSession, ThinkSplitter, parse_input


@pytest.mark.parametrize(
    ("line", "action"),
    [
        ("hello", Action.SEND),
        ("  ", Action.NOTHING),
        ("/exit", Action.EXIT),
        ("/QUIT", Action.EXIT),
        ("/reset", Action.RESET),
        ("/help", Action.HELP),
        ("/nope", Action.UNKNOWN),
    ],
)
def test_parse_input(line: str, action: Action) -> None:
    assert parse_input(line) is action


def test_session_keeps_system_prompt_across_reset() -> None:
    session = ChatSession(system="be brief")
    session.add_user("hi")
    session.add_assistant("hello")
    assert [m["role"] for m in session.messages()] == ["system", "user", "assistant"]
    session.reset()
    assert session.messages() == [{"role": "system", "content": "be brief"}]
    assert ChatSession().messages() == []


def _split(chunks: list[str]) -> list[tuple[str, str]]:
    splitter = ThinkSplitter()
    pieces = [piece for chunk in chunks for piece in splitter.feed(chunk)]
    pieces += list(splitter.flush())
    merged: list[tuple[str, str]] = []
    for kind, text in pieces:
        if merged and merged[-1][0] == kind:
            merged[-1] = (kind, merged[-1][1] + text)
        else:
            merged.append((kind, text))
    return merged


@pytest.mark.parametrize("size", [1, 2, 3, 7, 100])
def test_think_splitter_handles_tags_split_across_chunks(size: int) -> None:
    text = "<think>\nlet me see\n</think>\n\nThe answer is 4 < 5."
    chunks = [text[i : i + size] for i in range(0, len(text), size)]
    assert _split(chunks) == [
        ("reasoning", "\nlet me see\n"),
        ("answer", "\n\nThe answer is 4 < 5."),
    ]


def test_think_splitter_passes_plain_answers_and_unclosed_reasoning() -> None:
    assert _split(["Hello", " <thi", "s is not a tag"]) == [("answer", "Hello <this is not a tag")]
    assert _split(["<think>", "still thinking"]) == [("reasoning", "still thinking")]


def _app() -> typer.Typer:
    app = typer.Typer()
    app.callback()(lambda: None)  # a group, as under `aiforge`, not a lone command
    chat.register(app)
    return app


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def demo_replica(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real aiforge replica (transformers engine) serving the demo model."""
    from aiforge.config import Settings
    from aiforge.models.demo import ensure_demo_model

    root = tmp_path_factory.mktemp("chat")
    model = ensure_demo_model(Settings(cache_dir=root / "cache", data_dir=root / "data"))
    port = _free_port()
    argv = [
        sys.executable, "-m", "aiforge.engines.transformers", "--model", str(model),
        "--served-model-name", "demo", "--port", str(port), "--max-model-len", "2048",
    ]  # fmt: skip
    log = (root / "replica.log").open("w")
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"replica exited: {(root / 'replica.log').read_text()[-2000:]}")
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail("replica did not become healthy")
        yield url + "/v1"
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.mark.slow
def test_chat_streams_from_a_real_replica(demo_replica: str) -> None:
    app = _app()
    result = CliRunner().invoke(
        app,
        ["chat", "--url", demo_replica, "--system", "be brief", "--no-think"],
        input="hello there\n/reset\n/bogus\nsecond question\n/exit\n",
    )
    assert result.exit_code == 0, result.output
    assert "aiforge chat with demo" in result.output  # the model was picked from /v1/models
    assert "conversation cleared" in result.output
    assert "unknown command '/bogus'" in result.output
    assert result.output.count("tokens,") == 2  # two streamed replies, usage included


@pytest.mark.slow
def test_chat_reports_an_unknown_model_and_carries_on(demo_replica: str) -> None:
    app = _app()
    result = CliRunner().invoke(
        app, ["chat", "--url", demo_replica, "--model", "nope"], input="hi\n/exit\n"
    )
    assert result.exit_code == 0, result.output
    assert "error 404" in result.output


def test_chat_without_a_server_says_so(tmp_path: Path) -> None:
    app = _app()
    url = f"http://127.0.0.1:{_free_port()}/v1"
    result = CliRunner().invoke(app, ["chat", "--url", url], input="/exit\n")
    assert result.exit_code == 1
    assert "is `aiforge serve` running?" in result.output
