"""Chaos (issue 7, done when): under 32 concurrent mixed requests, SIGKILL the replica, then
the gateway, then both.

Real processes: ``aiforge serve`` (the platform on, SQLite in the data dir) with one
transformers replica of the tiny model (``--threads 1``). Thirty-two clients send chat and
completions, streamed and not, one after another, throughout. Then:

* every client got a complete answer or an explicit error — never a silent truncation (a
  stream ends with ``[DONE]``, an error event, or a broken connection the client raises on);
* the usage ledger has exactly one record per request id the clients saw (a request in
  flight in a killed gateway gets its record from the journal when the next one starts);
* the service is back within 30 s of each kill without a hand — the replica is restarted by
  the controller; a killed gateway is started again on the same data dir (its replicas died
  with it, and the new one reaps any left);
* no replica process is left once the service has stopped.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import httpx
from chaos_load import (
    LoadLog,
    kill,
    ledger_counts,
    leftover_replicas,
    replica_pids,
    run_workers,
)

from aiforge.testing.server import RemoteAiforgeServer

CLIENTS = 32
RECOVERY_BOUND_S = 30.0
SERVE_ARGS = ("--served-model-name", "tiny", "--dtype", "float32", "--threads", "1")


def test_kills_under_load_lose_no_answer_and_no_record(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    server = RemoteAiforgeServer(
        tiny_model_dir,
        engine="transformers",
        serve_args=SERVE_ARGS,
        data_dir=tmp_path / "data",
        startup_timeout_s=RECOVERY_BOUND_S,
    )
    server.start()
    pids: set[int] = set()
    try:
        log, recoveries = asyncio.run(_chaos(server, pids))
    finally:
        server.stop()
    assert not log.truncated(), log.truncated()
    assert all(s <= RECOVERY_BOUND_S for s in recoveries.values()), recoveries
    completed = [o for o in log.outcomes if o.result == "complete"]
    assert len(completed) >= CLIENTS, log.summary()
    counts = ledger_counts(server.data_dir)
    seen = log.seen_ids()
    assert len(set(seen)) == len(seen), "a request id was given twice"
    assert {i: counts[i] for i in seen if counts[i] != 1} == {}, log.summary()
    assert leftover_replicas(server.data_dir, pids) == []


async def _chaos(server: RemoteAiforgeServer, pids: set[int]) -> tuple[LoadLog, dict[str, float]]:
    log, stop = LoadLog(), asyncio.Event()
    load = asyncio.create_task(run_workers(server.url, server.api_key, CLIENTS, stop, log))
    recoveries: dict[str, float] = {}
    try:
        await asyncio.sleep(3.0)
        for victim in ("replica", "gateway", "both"):
            replicas = replica_pids(await _health(server))
            pids.update(replicas)
            assert replicas, "no replica to kill"
            killed_at = time.monotonic()
            if victim in ("replica", "both"):
                for pid in replicas:
                    kill(pid, signal.SIGKILL)
            if victim in ("gateway", "both"):
                server.kill()
                await asyncio.to_thread(server.start)
            recoveries[victim] = await _until_served(server, killed_at)
            pids.update(replica_pids(await _health(server)))
            await asyncio.sleep(2.0)  # load on the recovered service
    finally:
        stop.set()
        await asyncio.wait_for(load, timeout=90)
    return log, recoveries


async def _health(server: RemoteAiforgeServer) -> dict[str, object]:
    async with httpx.AsyncClient(timeout=5.0) as client:
        body: dict[str, object] = (await client.get(server.url_for("health"))).json()
        return body


async def _until_served(server: RemoteAiforgeServer, since: float) -> float:
    """Seconds from ``since`` until a request is answered again (fails after the bound)."""
    body = {"model": "tiny", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"authorization": f"Bearer {server.api_key}"}
    async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=10.0) as client:
        while time.monotonic() - since < RECOVERY_BOUND_S:
            try:
                if (await client.post("/v1/chat/completions", json=body)).status_code == 200:
                    return time.monotonic() - since
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError(f"not served again within {RECOVERY_BOUND_S:.0f}s:\n{server.log_tail()}")
