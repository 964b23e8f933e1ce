"""``run_replica`` as a real process: serves over HTTP, logs readiness, stops on SIGTERM."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import httpx

from aiforge.engines.server.main import parse_args

REPLICA = """
import sys
from transformers import AutoTokenizer
from aiforge.engines.server.main import run_replica
from aiforge.testing.fake_engine import FakeTokenEngine, text_script

class Engine(FakeTokenEngine):
    async def shutdown(self):
        print("engine shutdown", flush=True)

async def build(args):
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    return Engine(script=text_script(tokenizer, "Hi!")), tokenizer

run_replica(sys.argv[1:], build)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_parse_args_defaults(tmp_path: object) -> None:
    args = parse_args(["--model", "/models/qwen3", "--port", "9000", "--embedding"])
    assert (args.served_model_name, args.host, args.port, args.embedding) == (
        "qwen3",
        "127.0.0.1",
        9000,
        True,
    )


def test_replica_process_serves_and_stops_on_sigterm() -> None:
    from aiforge.testing.models import qwen3_tokenizer_dir

    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            REPLICA,
            "--model",
            str(qwen3_tokenizer_dir()),
            "--served-model-name",
            "m",
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        response = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json={
                "model": "m",
                "messages": [{"role": "user", "content": "x"}],
                "chat_template_kwargs": {"enable_thinking": False},
            },
            timeout=10,
        )
        assert response.json()["choices"][0]["message"]["content"] == "Hi!"
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    # uvicorn shuts down gracefully, then re-raises the captured SIGTERM.
    assert process.returncode in (0, -signal.SIGTERM)
    assert "replica ready: model m" in output
    assert "engine shutdown" in output
