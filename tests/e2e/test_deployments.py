"""Deployments end to end: real ``aiforge serve``, real replicas, the official ``openai`` client.

One server serves three deployments (a chat model with two replicas, a second chat model, an
embedding model). Under 32 concurrent streams the test scales up and down, rolls out a spec
change and SIGKILLs a replica, and checks what a client of a provider expects: no request
fails except the streams the killed replica was answering (which end with an error event),
the ledger holds exactly one record per request, and the replica comes back.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest

from aiforge.testing.models import tiny_qwen3, tiny_qwen3_embedding
from aiforge.testing.server import RemoteAiforgeServer

CHAT_A, CHAT_B, EMBED = "chat-a", "chat-b", "embed"
STREAMS = 32


@dataclass
class Outcome:
    request_id: str = ""
    ok: bool = False
    content_chunks: int = 0
    error: str = ""
    code: str | None = None


@dataclass
class Load:
    """``STREAMS`` concurrent streams on one model, each starting again when it ends."""

    server: RemoteAiforgeServer
    model: str
    max_tokens: int = 24
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Load:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()
        wait_for(lambda: len(self.outcomes) >= STREAMS, 120, "the load to get going")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=180)

    async def _run(self) -> None:
        client = self.server.async_client(timeout=120.0)
        try:
            await asyncio.gather(*(self._stream_forever(client, i) for i in range(STREAMS)))
        finally:
            await client.close()

    async def _stream_forever(self, client: openai.AsyncOpenAI, worker: int) -> None:
        turn = 0
        while not self._stop.is_set():
            turn += 1
            self.outcomes.append(await self._one(client, f"worker {worker} turn {turn}"))

    async def _one(self, client: openai.AsyncOpenAI, text: str) -> Outcome:
        outcome = Outcome()
        try:
            stream = await client.chat.completions.create(
                model=self.model,
                messages=[{"role": "user", "content": text}],
                max_tokens=self.max_tokens,
                stream=True,
            )
            outcome.request_id = stream.response.headers.get("x-request-id", "")
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    outcome.content_chunks += 1
            outcome.ok = True
        except openai.APIError as exc:
            outcome.error = f"{type(exc).__name__}: {exc}"
            outcome.code = getattr(exc, "code", None)
        return outcome

    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def cli(server: RemoteAiforgeServer, *args: str) -> str:
    env = {**os.environ, "AIFORGE_URL": server.url, "AIFORGE_API_KEY": server.api_key,
           "COLUMNS": "200"}  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "aiforge.cli", *args],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"aiforge {' '.join(args)}:\n{result.stdout}{result.stderr}"
    return result.stdout


def deployments(server: RemoteAiforgeServer) -> dict[str, dict[str, Any]]:
    listed = json.loads(cli(server, "status", "--json"))
    items = listed["data"] if isinstance(listed, dict) else listed
    return {d["name"]: d for d in items}


def replicas(
    server: RemoteAiforgeServer, name: str, state: str | None = None
) -> list[dict[str, Any]]:
    found = deployments(server)[name]["replicas"]
    return [r for r in found if state is None or r["state"] == state]


def settled(server: RemoteAiforgeServer, name: str, count: int, revision: str = "") -> bool:
    """``count`` replicas ready (of ``revision`` when given) and no other live one left."""
    found = replicas(server, name)
    ready = [r for r in found if r["state"] == "ready" and revision in r["revision"]]
    others = [r for r in found if r["state"] not in ("ready", "stopped", "failed")]
    return (
        len(ready) == count
        and not others
        and len(found) - len([r for r in found if r["state"] == "stopped"]) == count
    )


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RemoteAiforgeServer]:
    root = tmp_path_factory.mktemp("e2e-deployments")
    chat = tiny_qwen3(root / "tiny")
    embed = tiny_qwen3_embedding(root / "tiny-embed")
    args = ("--served-model-name", CHAT_A, "--replicas", "2", "--dtype", "float32",
            "--threads", "1", "--max-model-len", "1024")  # fmt: skip
    with RemoteAiforgeServer(
        chat, engine="transformers", serve_args=args, data_dir=root / "data",
        startup_timeout_s=300.0,
    ) as server:  # fmt: skip
        manifest = root / "deployments.yaml"
        manifest.write_text(
            f"""deployments:
  - name: {CHAT_A}
    model: {chat}
    engine: transformers
    replicas: 2
    dtype: float32
    threads: 1
    max_model_len: 1024
  - name: {CHAT_B}
    model: {chat}
    engine: transformers
    dtype: float32
    threads: 1
    policy: round_robin
  - name: {EMBED}
    model: {embed}
    engine: transformers
    dtype: float32
    threads: 1
"""
        )
        out = cli(server, "apply", "-f", str(manifest))
        assert CHAT_B in out
        assert EMBED in out
        server.manifest = manifest  # type: ignore[attr-defined]
        wait_for(
            lambda: all(settled(server, n, c) for n, c in ((CHAT_A, 2), (CHAT_B, 1), (EMBED, 1))),
            300, "three deployments ready",
        )  # fmt: skip
        yield server


def test_three_deployments_listed_and_answering(fleet: RemoteAiforgeServer) -> None:
    client = fleet.client()
    assert {m.id for m in client.models.list()} == {CHAT_A, CHAT_B, EMBED}
    for model in (CHAT_A, CHAT_B):
        reply = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
        assert reply.usage is not None
        assert reply.usage.completion_tokens > 0
    vectors = client.embeddings.create(model=EMBED, input=["a", "b"])
    assert len(vectors.data) == 2
    served_by = {
        client.chat.completions.with_raw_response.create(
            model=CHAT_A, messages=[{"role": "user", "content": f"q{i}"}], max_tokens=2
        ).headers["x-request-id"]
        for i in range(4)
    }
    assert len(served_by) == 4


def test_scale_up_and_down_under_load_fails_nothing(fleet: RemoteAiforgeServer) -> None:
    with Load(fleet, CHAT_A) as load:
        cli(fleet, "scale", CHAT_A, "3")
        wait_for(lambda: settled(fleet, CHAT_A, 3), 180, "3 ready replicas")
        cli(fleet, "scale", CHAT_A, "1")
        wait_for(lambda: settled(fleet, CHAT_A, 1), 180, "scale-down to 1 (drained)")
        cli(fleet, "scale", CHAT_A, "2")
        wait_for(lambda: settled(fleet, CHAT_A, 2), 180, "back to 2")
    assert load.failures() == []
    assert len(load.outcomes) > STREAMS


def test_a_spec_change_rolls_out_without_failures(fleet: RemoteAiforgeServer) -> None:
    before = {r["revision"] for r in replicas(fleet, CHAT_A, "ready")}
    manifest: Path = fleet.manifest  # type: ignore[attr-defined]
    manifest.write_text(manifest.read_text().replace("max_model_len: 1024", "max_model_len: 900"))
    with Load(fleet, CHAT_A) as load:
        out = cli(fleet, "apply", "-f", str(manifest))
        assert "updated" in out
        wait_for(
            lambda: settled(fleet, CHAT_A, 2)
            and not {r["revision"] for r in replicas(fleet, CHAT_A, "ready")} & before,
            300, "the rolling update",
        )  # fmt: skip
    assert load.failures() == []


def test_sigkilled_replica_fails_only_its_streams_and_comes_back(
    fleet: RemoteAiforgeServer,
) -> None:
    with Load(fleet, CHAT_A, max_tokens=96) as load:
        time.sleep(2.0)
        victim = replicas(fleet, CHAT_A, "ready")[0]
        os.kill(victim["pid"], signal.SIGKILL)
        wait_for(
            lambda: any(
                r["id"] == victim["id"] and r["state"] == "ready" and r["restarts"] >= 1
                for r in replicas(fleet, CHAT_A)
            ),
            180, "the killed replica to be restarted and ready",
        )  # fmt: skip
        time.sleep(2.0)
    failures = load.failures()
    # Only streams that already had text from the killed replica may fail, each with the
    # gateway's error event; every other request went to (or failed over to) another one.
    assert all(f.content_chunks > 0 and f.code == "upstream_error" for f in failures), failures
    assert len(failures) <= STREAMS
    status = cli(fleet, "status")
    assert victim["id"] in status
    assert CHAT_B in status
    assert EMBED in status

    seen = [o.request_id for o in load.outcomes if o.request_id]
    assert len(seen) == len(load.outcomes)
    fleet.stop()  # flushes the ledger
    rows = _ledger(fleet.data_dir / "aiforge.db", seen)
    assert sorted(rows) == sorted(seen), "exactly one usage record per request"
    for failure in failures:
        assert rows.count(failure.request_id) == 1


def _ledger(database: Path, request_ids: list[str]) -> list[str]:
    with sqlite3.connect(database) as connection:
        found = connection.execute("SELECT request_id FROM usage_records").fetchall()
    wanted = set(request_ids)
    return [row[0] for row in found if row[0] in wanted]
