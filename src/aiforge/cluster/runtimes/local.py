"""Run replicas as local subprocesses: the embedded default :class:`Runtime`.

Each replica process

* runs in its own process group, so stopping it also stops whatever it spawned (vLLM's
  engine core), SIGTERM first and SIGKILL after a grace period;
* dies with aiforge: the kernel sends it SIGKILL when its parent dies
  (``PR_SET_PDEATHSIG``, Linux), and a pidfile under ``<data_dir>/run/replicas/`` lets the
  next start of the same data dir stop what a crashed run left (:func:`reap_orphans`);
* writes its output to ``<log_dir>/replica-<id>.log``, whose tail becomes a failed
  replica's error;
* listens on a free loopback port and is healthy when its health endpoint answers 200.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from aiforge.cluster.cpus import CpuSlices
from aiforge.cluster.deployments import DeploymentSpec
from aiforge.cluster.health import check_health
from aiforge.cluster.launch import PreparedLaunch, prepare_launch
from aiforge.cluster.network import free_port
from aiforge.cluster.runtimes.base import (
    ProgressCallback,
    ReplicaProbe,
    ReplicaStartError,
    RunningReplica,
)
from aiforge.config import Settings
from aiforge.engines.base import LaunchPlan

__all__ = [
    "DEFAULT_STOP_GRACE_S",
    "LocalReplicaProcess",
    "LocalRuntime",
    "Prepare",
    "ReplicaStartError",
    "read_log_tail",
    "reap_orphans",
    "replica_log_path",
    "spawn_replica",
    "start_replica_process",
]

DEFAULT_STOP_GRACE_S = 10.0
_LOG_TAIL_LINES = 25
_PR_SET_PDEATHSIG = 1

Prepare = Callable[
    [DeploymentSpec, Settings, int, ProgressCallback, tuple[int, ...]], PreparedLaunch
]
"""How a deployment becomes a launch plan (:func:`~aiforge.cluster.launch.prepare_launch`)."""


@dataclass(slots=True)
class LocalReplicaProcess:
    """A started replica subprocess."""

    replica_id: str
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    pidfile: Path | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def is_alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        return read_log_tail(self.log_path, lines)

    def last_log_line(self) -> str:
        return read_log_tail(self.log_path, 1).strip()

    def stop(self, grace_s: float = DEFAULT_STOP_GRACE_S) -> int | None:
        """SIGTERM the replica's process group, then SIGKILL after ``grace_s``. Idempotent;
        blocks up to ``grace_s`` + 5 s. Returns the exit code (None if it could not be reaped).
        """
        try:
            return self._stop(grace_s)
        finally:
            if self.pidfile is not None:
                self.pidfile.unlink(missing_ok=True)

    def _stop(self, grace_s: float) -> int | None:
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


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def replica_log_path(log_dir: Path, replica_id: str) -> Path:
    """Where a replica's output goes (deployment names may hold ``/``: flattened)."""
    return log_dir / f"replica-{_file_name(replica_id)}.log"


def _file_name(replica_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._@+-]", "_", replica_id)


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


# -- spawning ------------------------------------------------------------------------------


def _load_prctl() -> Callable[..., int] | None:
    if sys.platform != "linux":
        return None
    try:
        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return prctl


# Resolved once in the parent: the child, between fork and exec, must not load libraries.
_PRCTL = _load_prctl()


def _in_child(parent: int, cpus: tuple[int, ...]) -> Callable[[], None]:
    """A ``preexec_fn``: ask the kernel to SIGKILL the child when its parent dies, and pin
    it to ``cpus`` (when given; its threads and children inherit the affinity)."""

    def arm() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)
        if _PRCTL is not None:
            _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
            if os.getppid() != parent:  # the parent died before the signal was armed
                os._exit(1)

    return arm


def spawn_replica(
    plan: LaunchPlan,
    *,
    replica_id: str,
    url: str,
    log_dir: Path,
    run_dir: Path | None = None,
    cpus: tuple[int, ...] = (),
) -> LocalReplicaProcess:
    """Start the process of ``plan`` (without waiting for it to be ready).

    Call it from a thread that lives as long as the replica should (the event loop's):
    the kernel's parent-death signal fires when the *thread* that forked the child exits,
    so spawning from a short-lived worker thread would kill the replica with it.
    ``run_dir`` receives its pidfile (see :func:`reap_orphans`); ``cpus`` pins it.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = replica_log_path(log_dir, replica_id)
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
            preexec_fn=_in_child(os.getpid(), cpus),
        )
    pidfile = _write_pidfile(run_dir, replica_id, process.pid, plan.argv) if run_dir else None
    return LocalReplicaProcess(
        replica_id=replica_id, url=url, process=process, log_path=log_path, pidfile=pidfile
    )


async def start_replica_process(
    plan: LaunchPlan,
    *,
    replica_id: str,
    url: str,
    log_dir: Path,
    progress: ProgressCallback,
    timeout_s: float | None = None,
    poll_interval_s: float = 0.25,
) -> LocalReplicaProcess:
    """Spawn one replica and wait until it is healthy; stop it and raise
    :class:`ReplicaStartError` (with its log tail) if it exits or times out first.

    For tools and tests that run a replica by hand; served deployments go through
    :class:`LocalRuntime` and the controller instead.
    """
    replica = spawn_replica(plan, replica_id=replica_id, url=url, log_dir=log_dir)
    progress(f"replica {replica_id}: started (pid {replica.pid}), log {replica.log_path}")
    timeout = plan.startup_timeout_s if timeout_s is None else timeout_s
    health_url = url.rstrip("/") + plan.health_path
    started = time.monotonic()
    try:
        async with httpx.AsyncClient(timeout=2.0) as client:
            while not (await check_health(client, health_url))[0]:
                if not replica.is_alive():
                    raise ReplicaStartError(
                        f"replica {replica_id} exited with code {replica.process.returncode} "
                        f"while starting; last log lines ({replica.log_path}):\n"
                        f"{replica.log_tail()}"
                    )
                if time.monotonic() - started > timeout:
                    raise ReplicaStartError(
                        f"replica {replica_id} was not healthy after {timeout:.0f}s; last log "
                        f"lines ({replica.log_path}):\n{replica.log_tail()}"
                    )
                await asyncio.sleep(poll_interval_s)
    except BaseException:
        await asyncio.to_thread(replica.stop, 2.0)
        raise
    progress(f"replica {replica_id}: ready after {time.monotonic() - started:.1f}s")
    return replica


# -- pidfiles and orphans ------------------------------------------------------------------


def _write_pidfile(run_dir: Path, replica_id: str, pid: int, argv: tuple[str, ...]) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / f"{_file_name(replica_id)}.json"
    record = {
        "replica_id": replica_id,
        "pid": pid,
        "pgid": pid,  # start_new_session: the replica leads its own group
        "argv": list(argv),
        "start_ticks": _start_ticks(pid),
        "started_at": time.time(),
        "owner_pid": os.getpid(),
        "owner_cmdline": _cmdline(os.getpid()),
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(path)
    return path


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.decode(errors="replace").split("\0")[:-1] if raw else []


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (``/proc/<pid>/stat`` field 22):
    with the pid, it names one process for good, even after the pid is recycled."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ")".
    return int(stat.rsplit(")", 1)[1].split()[19])


def _is_recorded_process(pid: int, argv: list[str] | None, start_ticks: int | None) -> bool:
    """Whether ``pid`` is still the process a pidfile recorded, not a recycled pid."""
    ticks = _start_ticks(pid)
    if ticks is None:
        return False
    if start_ticks is not None:
        return ticks == start_ticks
    return argv is not None and _cmdline(pid) == argv


def _owner_alive(record: dict[str, object]) -> bool:
    """Whether the aiforge process that started the replica still runs (then its replicas
    are not orphans: another serve shares this data dir)."""
    owner = record.get("owner_pid")
    if not isinstance(owner, int) or owner == os.getpid():
        return False
    cmdline = _cmdline(owner)
    return cmdline is not None and cmdline == record.get("owner_cmdline")


def reap_orphans(run_dir: Path) -> int:
    """Stop replica process groups left running by a crashed run of this data dir.

    Called at start-up, before any replica starts. A pidfile's group is killed only if its
    leader is still the very process recorded (same start time, or same command line when
    the start time is unknown) — a recycled pid is never killed — or if the leader is gone
    but members of its group remain (a live group keeps its id from being reused). Groups
    whose owner still runs are left alone. Returns how many groups were killed.
    """
    killed = 0
    for path in sorted(run_dir.glob("*.json")) if run_dir.is_dir() else ():
        try:
            record = json.loads(path.read_text())
            pid, pgid = int(record["pid"]), int(record["pgid"])
        except (OSError, ValueError, KeyError, TypeError):
            path.unlink(missing_ok=True)
            continue
        if _owner_alive(record):
            continue
        argv, ticks = record.get("argv"), record.get("start_ticks")
        if _is_recorded_process(pid, argv, ticks) or (
            not Path(f"/proc/{pid}").exists() and _group_exists(pgid)
        ):
            _kill_group(pgid, signal.SIGKILL)
            killed += 1
        path.unlink(missing_ok=True)
    return killed


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # not ours to judge
    return True


# -- the runtime ---------------------------------------------------------------------------


def url_of(port: int) -> str:
    return f"http://127.0.0.1:{port}"


@dataclass(slots=True)
class _Started:
    process: LocalReplicaProcess
    running: RunningReplica
    health_url: str


class LocalRuntime:
    """Starts replicas as subprocesses of this process (:class:`~.base.Runtime`)."""

    name = "local"

    def __init__(
        self,
        settings: Settings,
        log_dir: Path | None = None,
        *,
        run_dir: Path | None = None,
        prepare: Prepare = prepare_launch,
        probe_timeout_s: float = 2.0,
    ) -> None:
        self.settings = settings
        self.log_dir = log_dir if log_dir is not None else settings.data_dir / "logs"
        self.run_dir = run_dir if run_dir is not None else settings.data_dir / "run" / "replicas"
        self._prepare = prepare
        self._probe_timeout_s = probe_timeout_s
        self._started: dict[str, _Started] = {}
        self._client: httpx.AsyncClient | None = None
        self._cpus = CpuSlices(os.sched_getaffinity(0))

    async def start(
        self, replica_id: str, spec: DeploymentSpec, progress: ProgressCallback
    ) -> RunningReplica:
        """Prepare the launch in a thread (model download, engine set-up), then spawn."""
        if replica_id in self._started:
            raise ReplicaStartError(f"replica {replica_id} is already running")
        port = free_port()
        cpus = self._cpus.allocate(replica_id, spec.threads)
        try:
            prepared = await asyncio.to_thread(
                self._prepare, spec, self.settings, port, progress, cpus
            )
            # On the loop's thread, never in a worker thread: see spawn_replica.
            process = spawn_replica(
                prepared.plan, replica_id=replica_id, url=url_of(port), log_dir=self.log_dir,
                run_dir=self.run_dir, cpus=cpus,
            )  # fmt: skip
        except BaseException as exc:
            self._cpus.release(replica_id)
            if isinstance(exc, ReplicaStartError) or not isinstance(exc, Exception):
                raise
            # Model source, engine selection, a missing executable: the user's to fix.
            raise ReplicaStartError(str(exc) or type(exc).__name__) from exc
        url = url_of(port)
        timeout = self.settings.replica_startup_timeout_s or prepared.plan.startup_timeout_s
        running = RunningReplica(
            replica_id=replica_id, deployment=spec.name, url=url, engine=prepared.engine,
            dialect=prepared.dialect, pid=process.pid, startup_timeout_s=timeout,
        )  # fmt: skip
        self._started[replica_id] = _Started(process, running, url + prepared.plan.health_path)
        pinned = f" on CPUs {','.join(map(str, cpus))}" if cpus else ""
        progress(f"replica {replica_id}: {prepared.engine} for {prepared.model_path}{pinned}, "
                 f"log {process.log_path}")  # fmt: skip
        return running

    async def stop(self, replica_id: str, *, grace_s: float) -> None:
        started = self._started.pop(replica_id, None)
        if started is not None:
            await asyncio.to_thread(started.process.stop, grace_s)
        self._cpus.release(replica_id)

    def list(self) -> list[RunningReplica]:
        return [started.running for started in self._started.values()]

    async def probe(self, replica_id: str) -> ReplicaProbe:
        started = self._started.get(replica_id)
        if started is None:
            return ReplicaProbe(alive=False, healthy=False, detail="not running")
        code = started.process.process.poll()
        if code is not None:
            return ReplicaProbe(alive=False, healthy=False, exit_code=code, detail=f"exit {code}")
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._probe_timeout_s)
        healthy, detail = await check_health(self._client, started.health_url)
        return ReplicaProbe(alive=True, healthy=healthy, detail=detail)

    def log_tail(self, replica_id: str, lines: int = _LOG_TAIL_LINES) -> str:
        # From the file, not the process: the tail is wanted after the process is gone too.
        return read_log_tail(replica_log_path(self.log_dir, replica_id), lines)

    async def aclose(self) -> None:
        ids = list(self._started)
        await asyncio.gather(*(self.stop(i, grace_s=DEFAULT_STOP_GRACE_S) for i in ids))
        if self._client is not None:
            await self._client.aclose()
            self._client = None
