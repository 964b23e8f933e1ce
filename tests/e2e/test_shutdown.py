"""SIGTERM under load (issue 7, item 8): an orderly shutdown within a bound.

Real processes: ``aiforge serve`` with one transformers replica of the tiny model. Requests
long enough to outlive the grace period are in flight when the gateway gets SIGTERM: every
client gets a complete answer or an explicit error (a stream ends with ``[DONE]`` or an
error event, a non-streamed request gets a JSON envelope), the whole service stops within
15 s with default settings, every request the clients saw has exactly one usage record, and
no replica process is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import time
from pathlib import Path

from chaos_load import (
    LoadLog,
    kill,
    ledger_counts,
    leftover_replicas,
    replica_pids,
    run_workers,
)

from aiforge.testing.server import RemoteAiforgeServer

SHUTDOWN_BOUND_S = 15.0
SERVE_ARGS = ("--served-model-name", "tiny", "--dtype", "float32", "--threads", "1")


def test_sigterm_drains_in_flight_requests_within_the_bound(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    server = RemoteAiforgeServer(
        tiny_model_dir, engine="transformers", serve_args=SERVE_ARGS, data_dir=tmp_path / "data"
    )
    server.start()
    try:
        pids = set(replica_pids(server.health()))
        assert pids, server.health()
        log, elapsed = asyncio.run(_sigterm_under_load(server))
        process = server.process
        assert process is not None
        assert process.returncode == 0, server.log_tail()
    finally:
        server.stop()
    assert elapsed <= SHUTDOWN_BOUND_S, f"shutdown took {elapsed:.1f}s:\n{server.log_tail()}"
    assert not log.truncated(), log.truncated()
    drained = [o for o in log.outcomes if o.request_id is not None and o.result == "error"]
    assert drained, f"no request was ended by the shutdown: {log.summary()}"
    assert all("shutting_down" in o.detail for o in drained), drained
    counts = ledger_counts(server.data_dir)
    assert {i: counts[i] for i in log.seen_ids() if counts[i] != 1} == {}
    assert leftover_replicas(server.data_dir, pids) == []


async def _sigterm_under_load(server: RemoteAiforgeServer) -> tuple[LoadLog, float]:
    """Eight clients with long requests; SIGTERM once they are all at work."""
    log, stop = LoadLog(), asyncio.Event()
    load = asyncio.create_task(
        run_workers(server.url, server.api_key, 8, stop, log, max_tokens=4000)
    )
    await asyncio.sleep(3.0)
    process = server.process
    assert process is not None
    started = time.monotonic()
    kill(process.pid, signal.SIGTERM)
    stop.set()
    with contextlib.suppress(subprocess.TimeoutExpired):  # measured, then asserted
        await asyncio.to_thread(process.wait, SHUTDOWN_BOUND_S + 15)
    elapsed = time.monotonic() - started
    await asyncio.wait_for(load, timeout=30)
    return log, elapsed
