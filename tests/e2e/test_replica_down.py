"""A replica that dies: requests get 503 (OpenAI envelope) while it is down, and the
controller brings it back without a hand."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import openai
from e2e_helpers import error_of

from aiforge.testing.server import RemoteAiforgeServer


def test_killed_replica_gives_503(tiny_model_dir: Path, tmp_path: Path) -> None:
    args = ("--served-model-name", "tiny", "--dtype", "float32")
    with RemoteAiforgeServer(
        tiny_model_dir, engine="transformers", serve_args=args, data_dir=tmp_path / "data"
    ) as server:
        client = server.client()
        ok = client.chat.completions.create(
            model="tiny", max_tokens=2, messages=[{"role": "user", "content": "hi"}]
        )
        assert ok.choices
        (replica,) = server.replicas()
        os.kill(replica["pid"], signal.SIGKILL)
        error = _first_error(client)
        assert error.status_code == 503
        assert error_of(error.response)["code"] == "engine_unavailable"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            (back,) = server.replicas()
            if back["state"] == "ready" and back["pid"] != replica["pid"]:
                break
            time.sleep(0.2)
        assert (back["id"], back["state"], back["restarts"]) == (replica["id"], "ready", 1)
        again = client.chat.completions.create(
            model="tiny", max_tokens=2, messages=[{"role": "user", "content": "hi"}]
        )
        assert again.choices


def _first_error(client: openai.OpenAI) -> openai.APIStatusError:
    """The first failing answer (the first attempts may race the replica's exit)."""
    for _ in range(50):
        try:
            client.chat.completions.create(
                model="tiny", max_tokens=2, messages=[{"role": "user", "content": "hi"}]
            )
        except openai.APIStatusError as exc:
            return exc
        time.sleep(0.1)
    raise AssertionError("the gateway kept answering after its replica was killed")
