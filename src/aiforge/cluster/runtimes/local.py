"""Run replicas as local subprocesses.

Each replica runs in its own process group (so stopping it also stops whatever it spawned,
e.g. vLLM's engine core), writes its output to a log file under the data dir, and is ready
when its health endpoint answers 200. The runtime shows progress while it waits (elapsed
time and the replica's last log line) and, when a replica fails to start, the tail of its
log so the user sees why.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from aiforge.engines.base import LaunchPlan

ProgressCallback = Callable[[str], None]

DEFAULT_STOP_GRACE_S = 10.0
_LOG_TAIL_LINES = 25


class ReplicaStartError(RuntimeError):
    """The replica exited or did not become healthy in time; the message holds its log tail."""


@dataclass(slots=True)
class LocalReplicaProcess:
    """A started replica subprocess."""

    replica_id: str
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def is_alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        return read_log_tail(self.log_path, lines)

    def last_log_line(self) -> str:
        tail = read_log_tail(self.log_path, 1)
        return tail.strip()

    def stop(self, grace_s: float = DEFAULT_STOP_GRACE_S) -> int | None:
        """SIGTERM the replica's process group, then SIGKILL after ``grace_s``. Idempotent.

        Returns the exit code (None if it could not be reaped).
        """
        if self.process.poll() is not None:
            _kill_group(self.process.pid, signal.SIGKILL)  # leftovers of the group, if any
            return self.process.returncode
        _kill_group(self.process.pid, signal.SIGTERM)
        try:
            code = self.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            _kill_group(self.process.pid, signal.SIGKILL)
            try:
                return self.process.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                return None
        # The leader is gone; children that outlived it (ignored SIGTERM) go too.
        _kill_group(self.process.pid, signal.SIGKILL)
        return code


def _kill_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def read_log_tail(path: Path, lines: int) -> str:
    """The last ``lines`` lines of a log file (reads at most the last 64 KiB)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 65536))
            data = f.read()
    except FileNotFoundError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return "\n".join(line for line in text.splitlines()[-lines:])


class LocalRuntime:
    """Starts replicas from :class:`LaunchPlan` s as subprocesses on this machine."""

    def __init__(
        self, log_dir: Path, *, poll_interval_s: float = 0.25, progress_every_s: float = 5.0
    ) -> None:
        self.log_dir = log_dir
        self.poll_interval_s = poll_interval_s
        self.progress_every_s = progress_every_s

    def spawn(self, plan: LaunchPlan, *, replica_id: str, url: str) -> LocalReplicaProcess:
        """Start the process (does not wait for it to be ready)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"replica-{replica_id}.log"
        env = {**os.environ, **plan.env, "PYTHONUNBUFFERED": "1"}
        with log_path.open("ab") as log:
            log.write(f"==> {' '.join(plan.argv)}\n".encode())
            log.flush()
            process = subprocess.Popen(
                list(plan.argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        return LocalReplicaProcess(
            replica_id=replica_id, url=url, process=process, log_path=log_path
        )

    async def start(
        self,
        plan: LaunchPlan,
        *,
        replica_id: str,
        url: str,
        progress: ProgressCallback,
        timeout_s: float | None = None,
    ) -> LocalReplicaProcess:
        """Spawn the replica and wait until it is healthy; stop it and raise if it is not."""
        replica = self.spawn(plan, replica_id=replica_id, url=url)
        progress(f"replica {replica_id}: started (pid {replica.pid}), log {replica.log_path}")
        try:
            await self.wait_ready(replica, plan, progress, timeout_s=timeout_s)
        except BaseException:
            await asyncio.to_thread(replica.stop, 2.0)
            raise
        return replica

    async def wait_ready(
        self,
        replica: LocalReplicaProcess,
        plan: LaunchPlan,
        progress: ProgressCallback,
        *,
        timeout_s: float | None = None,
    ) -> None:
        """Poll the health endpoint until it answers 200, showing progress meanwhile."""
        timeout = plan.startup_timeout_s if timeout_s is None else timeout_s
        health_url = replica.url.rstrip("/") + plan.health_path
        started = time.monotonic()
        last_report = started
        async with httpx.AsyncClient(timeout=2.0) as client:
            while True:
                if not replica.is_alive():
                    raise ReplicaStartError(
                        f"replica {replica.replica_id} exited with code "
                        f"{replica.process.returncode} while starting; last log lines "
                        f"({replica.log_path}):\n{replica.log_tail()}"
                    )
                if await _is_healthy(client, health_url):
                    progress(
                        f"replica {replica.replica_id}: ready after "
                        f"{time.monotonic() - started:.1f}s"
                    )
                    return
                now = time.monotonic()
                if now - started > timeout:
                    raise ReplicaStartError(
                        f"replica {replica.replica_id} was not healthy after {timeout:.0f}s; "
                        f"last log lines ({replica.log_path}):\n{replica.log_tail()}"
                    )
                if now - last_report >= self.progress_every_s:
                    last_report = now
                    progress(
                        f"replica {replica.replica_id}: waiting for {health_url} "
                        f"({now - started:.0f}s) · {replica.last_log_line()[:160]}"
                    )
                await asyncio.sleep(self.poll_interval_s)


async def _is_healthy(client: httpx.AsyncClient, url: str) -> bool:
    try:
        response = await client.get(url)
    except httpx.HTTPError:
        return False
    return response.status_code == 200
