"""LocalRuntime with real subprocesses: start, probe, stop, dying with the parent, pidfiles
and reaping what a crashed run left (never a recycled pid)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from aiforge.cluster.deployments import DeploymentSpec
from aiforge.cluster.launch import PreparedLaunch
from aiforge.cluster.runtimes.base import ProgressCallback
from aiforge.cluster.runtimes.local import (
    LocalRuntime,
    Prepare,
    ReplicaStartError,
    reap_orphans,
    spawn_replica,
    start_replica_process,
)
from aiforge.config import Settings
from aiforge.engines.base import LaunchPlan
from aiforge.testing.server import free_port

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="uses /proc and prctl")

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
_SLEEPER = (sys.executable, "-c", "import time; time.sleep(600)")


def _running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


def _eventually(condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def _prepare_with(argv: tuple[str, ...]) -> Prepare:
    def prepare(
        spec: DeploymentSpec,
        settings: Settings,
        port: int,
        progress: ProgressCallback,
        cpus: tuple[int, ...] = (),
    ) -> PreparedLaunch:
        plan = LaunchPlan(argv=(*argv, str(port)), startup_timeout_s=30)
        return PreparedLaunch(
            plan, engine="fake", dialect="openai", model_path=Path("m"), is_demo=False
        )

    return prepare


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")


async def test_start_probe_and_stop_a_replica(settings: Settings) -> None:
    runtime = LocalRuntime(settings, prepare=_prepare_with((sys.executable, "-c", _SERVER)))
    spec = DeploymentSpec(name="org/demo", model="m")
    lines: list[str] = []
    running = await runtime.start("org/demo-0", spec, lines.append)
    try:
        assert running.pid is not None
        assert running.startup_timeout_s == 30
        assert running.url.startswith("http://127.0.0.1:")
        assert [r.replica_id for r in runtime.list()] == ["org/demo-0"]
        pidfile = json.loads((runtime.run_dir / "org_demo-0.json").read_text())
        assert pidfile["pid"] == running.pid
        assert pidfile["argv"][-2] == _SERVER
        for _ in range(200):
            probe = await runtime.probe("org/demo-0")
            if probe.healthy:
                break
            assert probe.alive
            await asyncio.sleep(0.05)
        assert probe.healthy
        assert "listening" in runtime.log_tail("org/demo-0")
        assert any("log" in line for line in lines)
    finally:
        await runtime.stop("org/demo-0", grace_s=5)
    pid = running.pid
    assert _eventually(lambda: not _group_members(pid)), "children stop with it"
    assert not (runtime.run_dir / "org_demo-0.json").exists()
    assert (await runtime.probe("org/demo-0")).alive is False
    await runtime.stop("org/demo-0", grace_s=5)  # idempotent
    await runtime.aclose()


async def test_an_exited_replica_probes_dead_with_its_code(settings: Settings) -> None:
    code = "import sys; print('CUDA out of memory: cannot load model', flush=True); sys.exit(3)"
    runtime = LocalRuntime(settings, prepare=_prepare_with((sys.executable, "-c", code)))
    await runtime.start("bad-0", DeploymentSpec(name="bad", model="m"), lambda _: None)
    for _ in range(200):
        probe = await runtime.probe("bad-0")
        if not probe.alive:
            break
        await asyncio.sleep(0.05)
    assert probe.exit_code == 3
    assert "CUDA out of memory" in runtime.log_tail("bad-0")
    await runtime.aclose()


async def test_a_failed_preparation_is_a_start_error(settings: Settings) -> None:
    def prepare(*args: object) -> PreparedLaunch:
        raise FileNotFoundError("no such file or directory: /models/x")

    runtime = LocalRuntime(settings, prepare=prepare)
    with pytest.raises(ReplicaStartError, match="no such file or directory"):
        await runtime.start("x-0", DeploymentSpec(name="x", model="/models/x"), lambda _: None)
    assert runtime.list() == []


async def test_start_replica_process_raises_with_the_log_tail(tmp_path: Path) -> None:
    code = "print('CUDA out of memory: cannot load model'); raise SystemExit(3)"
    plan = LaunchPlan(argv=(sys.executable, "-c", code), startup_timeout_s=30)
    with pytest.raises(ReplicaStartError, match="exited with code 3") as info:
        await start_replica_process(
            plan, replica_id="bad", url=f"http://127.0.0.1:{free_port()}", log_dir=tmp_path,
            progress=lambda line: None,
        )  # fmt: skip
    assert "CUDA out of memory" in str(info.value)


def test_a_replica_dies_with_its_parent(tmp_path: Path) -> None:
    middle = f"""
import sys, time
from pathlib import Path
from aiforge.cluster.runtimes.local import spawn_replica
from aiforge.engines.base import LaunchPlan
plan = LaunchPlan(argv={_SLEEPER!r})
replica = spawn_replica(plan, replica_id="r", url="", log_dir=Path({str(tmp_path)!r}))
print(replica.pid, flush=True)
time.sleep(600)
"""
    parent = subprocess.Popen([sys.executable, "-c", middle], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert _running(child)
        parent.kill()
        parent.wait()
        assert _eventually(lambda: not _running(child)), "the replica outlived its parent"
    finally:
        parent.kill()
        parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()


@pytest.fixture
def run_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "run"
    yield path
    for pidfile in path.glob("*.json"):  # whatever a failed test left running
        pid = json.loads(pidfile.read_text())["pid"]
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


def _orphan(pidfile: Path) -> None:
    """Make the pidfile look written by a run that has crashed."""
    record = json.loads(pidfile.read_text())
    record["owner_pid"], record["owner_cmdline"] = 2**22 + 1, ["aiforge", "serve"]
    pidfile.write_text(json.dumps(record))


def test_reap_orphans_kills_what_a_crashed_run_left(tmp_path: Path, run_dir: Path) -> None:
    replica = spawn_replica(
        LaunchPlan(argv=_SLEEPER), replica_id="demo-0", url="", log_dir=tmp_path, run_dir=run_dir
    )
    assert replica.pidfile is not None
    _orphan(replica.pidfile)
    assert reap_orphans(run_dir) == 1
    assert replica.process.wait(timeout=5) == -signal.SIGKILL
    assert list(run_dir.glob("*.json")) == []
    assert reap_orphans(run_dir) == 0


def test_reap_orphans_kills_a_group_whose_leader_is_gone(tmp_path: Path, run_dir: Path) -> None:
    leader = (
        f"import subprocess; p = subprocess.Popen({list(_SLEEPER)!r}); print(p.pid, flush=True)"
    )
    replica = spawn_replica(
        LaunchPlan(argv=(sys.executable, "-c", leader)), replica_id="demo-1", url="",
        log_dir=tmp_path, run_dir=run_dir,
    )  # fmt: skip
    replica.process.wait(timeout=10)
    assert replica.pidfile is not None
    _orphan(replica.pidfile)
    (member,) = _group_members(replica.pid)
    assert reap_orphans(run_dir) == 1
    assert _eventually(lambda: not _running(member))


def test_reap_orphans_never_kills_a_recycled_pid(tmp_path: Path, run_dir: Path) -> None:
    stranger = subprocess.Popen(_SLEEPER, start_new_session=True)
    try:
        run_dir.mkdir(parents=True)
        record = {
            "replica_id": "demo-0", "pid": stranger.pid, "pgid": stranger.pid,
            "argv": ["vllm", "serve"], "start_ticks": 1, "owner_pid": 2**22 + 1,
        }  # fmt: skip
        (run_dir / "demo-0.json").write_text(json.dumps(record))
        assert reap_orphans(run_dir) == 0
        assert stranger.poll() is None, "a process that merely reuses the pid lives on"
        assert not (run_dir / "demo-0.json").exists()
    finally:
        stranger.kill()
        stranger.wait()


def test_reap_orphans_leaves_replicas_of_a_live_run_alone(tmp_path: Path, run_dir: Path) -> None:
    owner = subprocess.Popen(_SLEEPER)
    replica = spawn_replica(
        LaunchPlan(argv=_SLEEPER), replica_id="demo-0", url="", log_dir=tmp_path, run_dir=run_dir
    )
    try:
        assert replica.pidfile is not None
        record = json.loads(replica.pidfile.read_text())
        record["owner_pid"], record["owner_cmdline"] = owner.pid, list(_SLEEPER)
        replica.pidfile.write_text(json.dumps(record))
        assert reap_orphans(run_dir) == 0
        assert replica.is_alive()
    finally:
        replica.stop(grace_s=2)
        owner.kill()
        owner.wait()


async def test_replicas_with_a_thread_count_run_on_their_own_cpus(settings: Settings) -> None:
    seen: list[tuple[int, ...]] = []
    base = _prepare_with((sys.executable, "-c", "import time; time.sleep(30)"))

    def prepare(
        spec: DeploymentSpec,
        settings: Settings,
        port: int,
        progress: ProgressCallback,
        cpus: tuple[int, ...] = (),
    ) -> PreparedLaunch:
        seen.append(cpus)
        return base(spec, settings, port, progress, cpus)

    available = sorted(os.sched_getaffinity(0))
    runtime = LocalRuntime(settings, prepare=prepare)
    spec = DeploymentSpec(name="pinned", model="m", threads=1)
    try:
        first = await runtime.start("pinned-0", spec, lambda _: None)
        second = await runtime.start("pinned-1", spec, lambda _: None)
        unpinned = await runtime.start("free-0", DeploymentSpec(name="free", model="m"), print)
        assert first.pid
        assert second.pid
        assert unpinned.pid
        expected = [(available[0],), (available[1 % len(available)],)]
        assert seen[:2] == expected
        assert [tuple(sorted(os.sched_getaffinity(p))) for p in (first.pid, second.pid)] == expected
        assert sorted(os.sched_getaffinity(unpinned.pid)) == available
        await runtime.stop("pinned-0", grace_s=1)
        await runtime.start("pinned-2", spec, lambda _: None)
        assert seen[-1] == expected[0]  # the freed CPU is handed out again
    finally:
        await runtime.aclose()
