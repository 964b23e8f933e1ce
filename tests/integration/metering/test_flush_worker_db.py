"""The flush worker on migrated SQLite and PostgreSQL: the flusher thread hands it every
batch, two gateways with a worker each adopt one dead gateway's segments, and every request
ends with exactly one row."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, func, select

from aiforge.platform.metering import UsageLedger, UsageRecordRow
from aiforge.platform.metering.worker import FlushWorker
from aiforge.types import GATEWAY_CRASHED, UsageEvent

STARTED = datetime(2025, 6, 1, 12, tzinfo=UTC).timestamp()


def event(request_id: str, i: int) -> UsageEvent:
    return UsageEvent(
        request_id=request_id, key_id=f"k{i % 3}", project_id="p1", organization_id="o1",
        model="qwen", kind="chat", status_code=200, prompt_tokens=i % 11,
        completion_tokens=i % 13, started_at=STARTED + i,
    )  # fmt: skip


def provisional(request_id: str, i: int) -> UsageEvent:
    return replace(event(request_id, i), status_code=502, completion_tokens=0,
                   error_type=GATEWAY_CRASHED)  # fmt: skip


def rows(engine: Engine) -> dict[str, str | None]:
    with engine.connect() as connection:
        query = select(UsageRecordRow.request_id, UsageRecordRow.error_type)
        return {row[0]: row[1] for row in connection.execute(query)}


def count(engine: Engine) -> int:
    with engine.connect() as connection:
        query = select(func.count()).select_from(UsageRecordRow)
        return int(connection.execute(query).scalar_one())


async def test_the_flusher_thread_hands_every_batch_to_the_worker(
    engine: Engine, database_url: str, tmp_path: Path
) -> None:
    journal = tmp_path / "journal"
    worker = FlushWorker(database_url)
    ledger = UsageLedger(engine, journal, flush_interval_s=0.02, flush_worker=worker)
    await ledger.start()
    for i in range(2_000):
        ledger.open(provisional(f"req-{i}", i))
        if i >= 8:  # a few requests run across many flushes
            ledger.record(event(f"req-{i - 8}", i - 8))
        if i % 200 == 0:
            await asyncio.sleep(0.03)
    for _ in range(200):
        if count(engine) == 1_992:
            break
        await asyncio.sleep(0.05)
    pid = worker.pid
    assert pid is not None  # the thread used the worker, not the gateway's own insert
    for i in range(1_992, 2_000):
        ledger.record(event(f"req-{i}", i))
    await ledger.stop()
    assert worker.pid is None
    stored = rows(engine)
    assert len(stored) == 2_000
    assert set(stored.values()) == {None}  # no placeholder: every request finished here
    assert not list(journal.glob("*.jsonl"))


async def test_two_gateways_with_workers_adopt_a_dead_ones_requests_once(
    engine: Engine, database_url: str, tmp_path: Path
) -> None:
    journal = tmp_path / "journal"
    dead = UsageLedger(engine, journal)
    for i in range(600):
        dead.open(provisional(f"dead-{i}", i))
        finished = i - 50  # records land segments after their opened entries
        if finished >= 0 and finished % 2 == 0:
            dead.record(event(f"dead-{finished}", finished))
        if i % 100 == 99:  # sealed, the running ones carried along, never flushed
            segment = dead._journal.seal(carry=dead._carried)
            assert segment is not None
            dead._journal.release(segment)
    dead._journal.close()  # SIGKILL: six orphan segments and the active one
    gateways = [
        UsageLedger(engine, journal, flush_worker=FlushWorker(database_url)) for _ in range(2)
    ]
    for g, gateway in enumerate(gateways):
        for i in range(100):
            gateway.record(event(f"live-{g}-{i}", i))
    await asyncio.gather(*(asyncio.to_thread(gateway.flush, adopt=True) for gateway in gateways))
    assert all(gateway._worker is not None and gateway._worker.pid for gateway in gateways)
    await asyncio.gather(*(gateway.stop() for gateway in gateways))
    stored = rows(engine)
    assert len(stored) == 800
    crashed = {rid for rid, error in stored.items() if error == GATEWAY_CRASHED}
    assert crashed == {f"dead-{i}" for i in range(600) if i % 2 or i >= 550}
    assert not list(journal.glob("*.jsonl"))
