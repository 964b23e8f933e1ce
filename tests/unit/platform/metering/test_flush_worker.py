"""The flush worker process: batches written there, segments deleted only after its answer,
a worker that dies or cannot start, and its lifetime bound to the gateway's."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from aiforge.config import Settings
from aiforge.platform.db.base import Base
from aiforge.platform.db.engine import make_engine
from aiforge.platform.metering import Journal, UsageLedger, UsageRecordRow, read_segment
from aiforge.platform.metering.flusher import redact
from aiforge.platform.metering.worker import FlushWorker, FlushWorkerError
from aiforge.types import GATEWAY_CRASHED, UsageEvent


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'usage.db'}"


@pytest.fixture
def engine(url: str) -> Iterator[Engine]:
    db = make_engine(url)
    Base.metadata.create_all(db, tables=[UsageRecordRow.__table__])  # type: ignore[list-item]
    yield db
    db.dispose()


def event(request_id: str, **overrides: object) -> UsageEvent:
    values: dict[str, object] = {
        "request_id": request_id, "key_id": "k1", "project_id": "p1",
        "organization_id": "o1", "model": "qwen", "kind": "chat", "status_code": 200,
        "prompt_tokens": 10, "completion_tokens": 5, "started_at": 1.7e9,
    }  # fmt: skip
    values.update(overrides)
    return UsageEvent(**values)  # type: ignore[arg-type]


def stored(engine: Engine) -> dict[str, str | None]:
    """Request id to error type of every row."""
    with engine.connect() as connection:
        query = select(UsageRecordRow.request_id, UsageRecordRow.error_type)
        return {row[0]: row[1] for row in connection.execute(query)}


def count(engine: Engine) -> int:
    with engine.connect() as connection:
        query = select(func.count()).select_from(UsageRecordRow)
        return int(connection.execute(query).scalar_one())


def segments(journal_dir: Path) -> list[Path]:
    return sorted(journal_dir.glob("*.jsonl"))


def exited(pid: int, timeout_s: float = 10.0) -> bool:
    """Whether ``pid`` is gone (or a zombie nobody reaped yet) within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.02)
    return False


def started(worker: FlushWorker, timeout_s: float = 30.0) -> int | None:
    """The worker's pid once it runs (None if it did not start within ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while worker.pid is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return worker.pid


def worker_script(body: str) -> list[str]:
    """A worker command running the real flusher with ``body`` run first (to break it)."""
    prelude = "import os, signal, sys\nfrom aiforge.platform.metering import flusher\n"
    return [sys.executable, "-c", prelude + body + "\nsys.exit(flusher.main())\n"]


class Watching(FlushWorker):
    """Checks that every segment handed over exists and stays locked by the gateway while
    the worker works, and is still there when the worker answered."""

    def __init__(self, url: str, journal_dir: Path) -> None:
        super().__init__(url)
        self.journal_dir = journal_dir
        self.batches = 0

    def write(self, batch: Sequence[tuple[Path, bool]]) -> int | None:
        assert all(path.exists() for path, _ in batch)
        assert list(Journal(self.journal_dir).adopt_orphans()) == []
        inserted = super().write(batch)
        assert all(path.exists() for path, _ in batch)
        self.batches += 1
        return inserted


async def test_the_worker_writes_batches_the_gateway_deletes_after(
    engine: Engine, url: str, tmp_path: Path
) -> None:
    journal_dir = tmp_path / "journal"
    worker = Watching(url, journal_dir)
    dead = UsageLedger(engine, journal_dir)
    dead.open(event("crashed", status_code=502, error_type=GATEWAY_CRASHED))
    dead._journal.close()  # SIGKILL: its segment is adopted below
    ledger = UsageLedger(engine, journal_dir, flush_worker=worker)
    for i in range(3):
        ledger.open(event(f"r{i}", status_code=502, error_type=GATEWAY_CRASHED))
        ledger.record(event(f"r{i}"))
    ledger.open(event("running", status_code=502, error_type=GATEWAY_CRASHED))
    assert ledger.flush(adopt=True) == 4
    pid = worker.pid
    assert pid is not None
    assert stored(engine) == {"crashed": GATEWAY_CRASHED, "r0": None, "r1": None, "r2": None}
    (carried,) = segments(journal_dir)  # the opened entry of the request still running
    assert [e["opened"]["request_id"] for e in read_segment(carried)] == ["running"]
    ledger.record(event("running"))
    assert ledger.flush() == 1
    assert worker.pid == pid  # one long-lived process
    assert worker.batches == 2
    assert not segments(journal_dir)
    await ledger.stop()
    assert worker.pid is None
    assert exited(pid)
    assert stored(engine)["running"] is None


@pytest.mark.parametrize("commit", [False, True], ids=["before-commit", "after-commit"])
async def test_a_worker_killed_mid_batch_leaves_the_segments_for_the_next_flush(
    engine: Engine, url: str, tmp_path: Path, commit: bool
) -> None:
    marker = tmp_path / "killed-once"
    die = f"""
marker = {str(marker)!r}
write = flusher.write_segments
def write_then_die(engine, batch):
    if not os.path.exists(marker):
        open(marker, "w").close()
        if {commit}:
            write(engine, batch)
        os.kill(os.getpid(), signal.SIGKILL)
    return write(engine, batch)
flusher.write_segments = write_then_die
"""
    journal_dir = tmp_path / "journal"
    worker = FlushWorker(url, command=worker_script(die))
    ledger = UsageLedger(engine, journal_dir, flush_worker=worker)
    for i in range(5):
        ledger.record(event(f"r{i}"))
    with pytest.raises(FlushWorkerError, match="died mid-batch"):
        ledger.flush()
    assert marker.exists()
    assert count(engine) == (5 if commit else 0)
    (kept,) = segments(journal_dir)  # still pending, still ours
    assert len(read_segment(kept)) == 5
    assert list(Journal(journal_dir).adopt_orphans()) == []
    ledger.record(event("r5"))
    assert ledger.flush() == (1 if commit else 6)  # a new worker; the replay is idempotent
    assert count(engine) == 6
    assert not segments(journal_dir)
    await ledger.stop()


async def test_an_idle_worker_that_died_is_replaced_without_failing_a_flush(
    engine: Engine, url: str, tmp_path: Path
) -> None:
    worker = FlushWorker(url)
    ledger = UsageLedger(engine, tmp_path / "journal", flush_worker=worker)
    ledger.record(event("r1"))
    assert ledger.flush() == 1
    first = worker.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    assert exited(first)
    ledger.record(event("r2"))
    assert ledger.flush() == 1
    assert worker.pid not in (None, first)
    await ledger.stop()


async def test_a_worker_that_dies_on_every_batch_gives_way_to_the_gateway(
    engine: Engine, url: str, tmp_path: Path
) -> None:
    die = "flusher.write_segments = lambda engine, batch: os.kill(os.getpid(), signal.SIGKILL)"
    journal_dir = tmp_path / "journal"
    worker = FlushWorker(url, command=worker_script(die))
    ledger = UsageLedger(engine, journal_dir, flush_worker=worker)
    ledger.record(event("r1"))
    for _ in range(2):  # a new worker after the first death; the batch may be the cause
        with pytest.raises(FlushWorkerError):
            ledger.flush()
    assert ledger.flush() == 1  # written in the gateway while the worker backs off
    assert worker.pid is None
    assert not segments(journal_dir)
    await ledger.stop()


@pytest.mark.parametrize(
    "command",
    [["/nonexistent/python"], [sys.executable, "-c", "import sys; sys.exit(3)"]],
    ids=["missing", "exits"],
)
async def test_when_no_worker_starts_the_gateway_writes_the_batch(
    engine: Engine,
    url: str,
    tmp_path: Path,
    command: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    starts = tmp_path / "starts"
    if len(command) > 1:  # count the attempts
        command = [*command[:2], f"open({str(starts)!r}, 'a').write('x'); " + command[2]]
    worker = FlushWorker(url, command=command, retry_after_s=3600)
    ledger = UsageLedger(engine, tmp_path / "journal", flush_worker=worker)
    ledger.record(event("r1"))
    with caplog.at_level(logging.WARNING):
        assert ledger.flush() == 1
    assert "no flush worker" in caplog.text
    ledger.record(event("r2"))
    assert ledger.flush() == 1  # no new attempt before retry_after_s
    if len(command) > 1:
        assert starts.read_text() == "x"
    assert count(engine) == 2
    await ledger.stop()


async def test_a_database_error_keeps_the_segments_and_the_worker(url: str, tmp_path: Path) -> None:
    journal_dir = tmp_path / "journal"
    engine = make_engine(url)  # no table yet
    worker = FlushWorker(url)
    ledger = UsageLedger(engine, journal_dir, flush_worker=worker)
    ledger.record(event("r1"))
    with pytest.raises(FlushWorkerError, match="no such table"):
        ledger.flush()
    pid = worker.pid
    assert pid is not None
    assert len(segments(journal_dir)) == 1
    Base.metadata.create_all(engine, tables=[UsageRecordRow.__table__])  # type: ignore[list-item]
    assert ledger.flush() == 1
    assert worker.pid == pid
    await ledger.stop()
    engine.dispose()


def test_errors_never_show_the_database_password(
    engine: Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "s3cr/et pass"
    assert "s3cr" not in redact(
        "connect to postgresql://u:s3cr%2Fet%20pass@db/x failed for 's3cr/et pass'",
        "postgresql://u:s3cr%2Fet%20pass@db/x",
    )
    unparsable = f"://aiforge:{secret}@db:5432"  # SQLAlchemy's error quotes the URL
    ledger = UsageLedger(engine, tmp_path / "journal", flush_worker=FlushWorker(unparsable))
    ledger.record(event("r1"))
    with caplog.at_level(logging.WARNING):
        assert ledger.flush() == 1  # the gateway wrote it
    assert "ArgumentError" in caplog.text
    assert secret not in caplog.text


_GATEWAY = """
import sys, time
from pathlib import Path
from aiforge.platform.db.engine import make_engine
from aiforge.platform.metering import UsageLedger
from aiforge.platform.metering.worker import FlushWorker
from aiforge.types import UsageEvent
worker = FlushWorker(sys.argv[1])
ledger = UsageLedger(make_engine(sys.argv[1]), Path(sys.argv[2]), flush_worker=worker)
ledger.record(UsageEvent("r1", "k1", "p1", "o1", "qwen", "chat", 200))
print(ledger.flush(), worker.pid, flush=True)
time.sleep(60)
"""


def test_the_worker_exits_when_its_gateway_is_killed(
    engine: Engine, url: str, tmp_path: Path
) -> None:
    gateway = subprocess.Popen(
        [sys.executable, "-c", _GATEWAY, url, str(tmp_path / "journal")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert gateway.stdout is not None
        inserted, pid = gateway.stdout.readline().split()
        assert inserted == "1"
        assert not exited(int(pid), timeout_s=0.2)  # it waits for the next batch
        os.kill(gateway.pid, signal.SIGKILL)
        gateway.wait(timeout=10)
        assert exited(int(pid))  # its stdin closed with the gateway
    finally:
        if gateway.poll() is None:
            gateway.kill()
            gateway.wait()
        if gateway.stdout is not None:
            gateway.stdout.close()
    assert stored(engine) == {"r1": None}


def test_the_worker_exits_when_its_stdin_closes(engine: Engine, url: str) -> None:
    worker = subprocess.Popen(
        [sys.executable, "-m", "aiforge.platform.metering.flusher"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert worker.stdin is not None
    assert worker.stdout is not None
    worker.stdin.write(b'{"database_url": "%s"}\n' % url.encode())
    worker.stdin.flush()
    assert worker.stdout.readline() == b'{"ready":true}\n'
    worker.stdin.write(b'{"segments": []}\n')
    worker.stdin.flush()
    assert worker.stdout.readline() == b'{"inserted":0}\n'
    worker.stdin.close()
    assert worker.wait(timeout=10) == 0
    worker.stdout.close()


def test_settings_give_the_ledger_a_flush_worker(engine: Engine, tmp_path: Path) -> None:
    ledger = UsageLedger.from_settings(Settings(data_dir=tmp_path), engine)
    assert isinstance(ledger._worker, FlushWorker)
    assert ledger._worker.pid is None  # started by the first flush with work


def test_the_flush_worker_can_be_turned_off(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if "usage_flush_process" not in Settings.model_fields:
        pytest.skip("aiforge.config.Settings does not declare usage_flush_process yet")
    monkeypatch.setenv("AIFORGE_USAGE_FLUSH_PROCESS", "0")
    assert UsageLedger.from_settings(Settings(data_dir=tmp_path), engine)._worker is None


async def test_the_worker_starts_with_the_ledger_not_in_its_first_flush(
    engine: Engine, url: str, tmp_path: Path
) -> None:
    """Its start (imports: ~0.6 s of CPU) belongs to the gateway's start, not to a flush
    under load."""
    worker = FlushWorker(url)
    ledger = UsageLedger(engine, tmp_path / "journal", flush_interval_s=3600.0, flush_worker=worker)
    await ledger.start()
    try:
        pid = await asyncio.to_thread(started, worker)
        assert pid is not None
    finally:
        await ledger.stop()
    assert exited(pid)
