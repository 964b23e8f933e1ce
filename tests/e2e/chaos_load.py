"""Clients for the chaos and shutdown tests: mixed requests over raw HTTP, each classified as
a complete answer or an explicit error, never accepted when an answer is silently cut short.

A stream is complete when it ends with ``data: [DONE]`` and carried no error event; it is an
explicit error when it ends with an error event or breaks (the client raises). A stream whose
HTTP body ends cleanly without either is a silent truncation: :class:`Outcome` says so and
the tests fail on it. The id of every request whose response head arrived
(``x-request-id``) is kept, to be matched with the usage ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import orjson

Result = Literal["complete", "error", "truncated"]

PROMPTS = ("Tell me a story.", "Count to ten.", "What is a replica?", "Say hi.")


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: str
    result: Result
    request_id: str | None
    """The ``x-request-id`` the client saw (None when no response head arrived)."""
    detail: str = ""


@dataclass
class LoadLog:
    outcomes: list[Outcome] = field(default_factory=list)

    def add(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)

    def seen_ids(self) -> list[str]:
        return [o.request_id for o in self.outcomes if o.request_id is not None]

    def truncated(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.result == "truncated"]

    def summary(self) -> str:
        counts = Counter((o.kind, o.result) for o in self.outcomes)
        return ", ".join(f"{kind}/{result}: {n}" for (kind, result), n in sorted(counts.items()))


def request_body(number: int, max_tokens: int) -> tuple[str, str, dict[str, Any]]:
    """The ``number``-th request of the mix: ``(kind, path, body)``."""
    prompt = PROMPTS[number % len(PROMPTS)]
    chat = {"model": "tiny", "messages": [{"role": "user", "content": prompt}]}
    match number % 4:
        case 0:
            return "chat-stream", "/v1/chat/completions", {**chat, "stream": True,
                                                           "max_tokens": max_tokens}  # fmt: skip
        case 1:
            return "chat", "/v1/chat/completions", {**chat, "max_tokens": max_tokens}
        case 2:
            body = {"model": "tiny", "prompt": prompt, "max_tokens": max_tokens, "stream": True}
            return "completion-stream", "/v1/completions", body
        case _:
            return "completion", "/v1/completions", {"model": "tiny", "prompt": prompt,
                                                     "max_tokens": max_tokens}  # fmt: skip


async def send(client: httpx.AsyncClient, kind: str, path: str, body: dict[str, Any]) -> Outcome:
    """One request, classified."""
    request_id = None
    try:
        async with client.stream("POST", path, json=body) as response:
            request_id = response.headers.get("x-request-id")
            if not body.get("stream") or response.status_code != 200:
                raw = await response.aread()
                return _answer(kind, request_id, response.status_code, raw)
            payloads = [
                line.removeprefix("data:").strip()
                async for line in response.aiter_lines()
                if line.startswith("data:")
            ]
    except httpx.HTTPError as exc:  # refused, reset, cut mid-body: the client raises
        return Outcome(kind, "error", request_id, f"{type(exc).__name__}: {exc}")
    return _stream(kind, request_id, payloads)


def _answer(kind: str, request_id: str | None, status: int, raw: bytes) -> Outcome:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return Outcome(kind, "truncated", request_id, f"HTTP {status}, not JSON: {raw[:200]!r}")
    if status == 200 and isinstance(body, dict) and body.get("choices"):
        return Outcome(kind, "complete", request_id)
    if status != 200 and isinstance(body, dict) and isinstance(body.get("error"), dict):
        return Outcome(kind, "error", request_id, f"HTTP {status} {body['error'].get('code')}")
    return Outcome(kind, "truncated", request_id, f"HTTP {status}: {raw[:200]!r}")


def _stream(kind: str, request_id: str | None, payloads: list[str]) -> Outcome:
    errors = [p for p in payloads if p.startswith("{") and '"error"' in p[:12]]
    if errors:
        return Outcome(kind, "error", request_id, errors[-1][:200])
    if payloads and payloads[-1] == "[DONE]":
        return Outcome(kind, "complete", request_id)
    return Outcome(kind, "truncated", request_id, f"{len(payloads)} events, no [DONE]")


async def run_workers(
    base_url: str, api_key: str, workers: int, stop: asyncio.Event, log: LoadLog,
    *, max_tokens: int = 24, retry_pause_s: float = 0.2,
) -> None:  # fmt: skip
    """``workers`` clients, each sending the mix one request after another until ``stop``."""

    async def worker(index: int, client: httpx.AsyncClient) -> None:
        number = index
        while not stop.is_set():
            kind, path, body = request_body(number, max_tokens)
            outcome = await send(client, kind, path, body)
            log.add(outcome)
            number += workers
            if outcome.result != "complete":
                await asyncio.sleep(retry_pause_s)  # the service may be down: do not spin

    limits = httpx.Limits(max_connections=workers * 2, max_keepalive_connections=workers)
    headers = {"authorization": f"Bearer {api_key}"}
    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, timeout=60.0, limits=limits
    ) as client:
        await asyncio.gather(*(worker(i, client) for i in range(workers)))


def ledger_counts(data_dir: Path) -> Counter[str]:
    """How many usage records each request id has in the data dir's SQLite ledger."""
    with contextlib.closing(sqlite3.connect(data_dir / "aiforge.db")) as connection:
        rows = connection.execute("SELECT request_id FROM usage_records").fetchall()
    return Counter(str(row[0]) for row in rows)


def replica_pids(health: dict[str, Any]) -> list[int]:
    return [
        int(replica["pid"])
        for deployment in health.get("deployments", [])
        for replica in deployment.get("replicas", [])
        if isinstance(replica.get("pid"), int)
    ]


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def leftover_replicas(data_dir: Path, pids: set[int]) -> list[str]:
    """Processes of the data dir still alive: the replicas seen, those the pidfiles name,
    and any process whose command line names the data dir (a gateway)."""
    left = [f"pid {pid}" for pid in sorted(pids) if alive(pid)]
    run_dir = data_dir / "run" / "replicas"
    for path in sorted(run_dir.glob("*.json")) if run_dir.is_dir() else ():
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            pid = int(orjson.loads(path.read_bytes())["pid"])
            if alive(pid):
                left.append(f"{path.name}: pid {pid}")
    needle = str(data_dir).encode()
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            if needle in (proc / "cmdline").read_bytes() and alive(int(proc.name)):
                left.append(f"pid {proc.name}: {(proc / 'cmdline').read_bytes()[:120]!r}")
    return left


def kill(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
