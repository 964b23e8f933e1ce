"""LocalRuntime with real subprocesses: ready, failure with log tail, clean stop."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from aiforge.cluster.runtimes.local import LocalRuntime, ReplicaStartError
from aiforge.engines.base import LaunchPlan
from aiforge.testing.server import free_port

# A replica stand-in: serves /health after a short delay, spawns a child in its group,
# and logs as it goes.
_SERVER = """
import http.server, subprocess, sys, time
print("loading weights", flush=True)
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
time.sleep(0.3)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404); self.end_headers()
    def log_message(self, *a): pass
print("listening", flush=True)
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def _group_alive(pgid: int) -> bool:
    """Whether any process of the group still runs (zombies awaiting init do not count)."""
    for _ in range(50):
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        time.sleep(0.05)
    return True


async def test_start_waits_for_health_and_stop_kills_the_group(tmp_path: Path) -> None:
    port = free_port()
    plan = LaunchPlan(argv=(sys.executable, "-c", _SERVER, str(port)), startup_timeout_s=30)
    lines: list[str] = []
    runtime = LocalRuntime(tmp_path / "logs", progress_every_s=0.0)
    replica = await runtime.start(plan, replica_id="r0", url=f"http://127.0.0.1:{port}",
                                  progress=lines.append)  # fmt: skip
    try:
        assert replica.is_alive()
        assert "ready after" in lines[-1]
        assert any("loading weights" in line or "waiting" in line for line in lines)
        assert "listening" in replica.log_tail()
    finally:
        replica.stop(grace_s=5)
    assert not replica.is_alive()
    assert not _group_alive(replica.pid), "the replica's child must be stopped with it"
    replica.stop()  # idempotent


async def test_failed_start_raises_with_the_log_tail(tmp_path: Path) -> None:
    code = "print('CUDA out of memory: cannot load model'); raise SystemExit(3)"
    plan = LaunchPlan(argv=(sys.executable, "-c", code), startup_timeout_s=30)
    runtime = LocalRuntime(tmp_path)
    with pytest.raises(ReplicaStartError, match="exited with code 3") as info:
        await runtime.start(plan, replica_id="bad", url=f"http://127.0.0.1:{free_port()}",
                            progress=lambda line: None)  # fmt: skip
    assert "CUDA out of memory" in str(info.value)


async def test_start_times_out_and_stops_the_process(tmp_path: Path) -> None:
    plan = LaunchPlan(argv=(sys.executable, "-c", "import time; time.sleep(60)"),
                      startup_timeout_s=0.5)  # fmt: skip
    runtime = LocalRuntime(tmp_path)
    process_holder = []
    original = runtime.spawn

    def spawn(*args: object, **kwargs: object) -> object:
        process = original(*args, **kwargs)  # type: ignore[arg-type]
        process_holder.append(process)
        return process

    runtime.spawn = spawn  # type: ignore[method-assign]
    with pytest.raises(ReplicaStartError, match="not healthy after"):
        await runtime.start(plan, replica_id="slow", url=f"http://127.0.0.1:{free_port()}",
                            progress=lambda line: None)  # fmt: skip
    assert not process_holder[0].is_alive()
