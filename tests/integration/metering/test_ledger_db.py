"""The ledger on migrated SQLite and PostgreSQL: idempotent replay, concurrent adopters."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, func, select

from aiforge.platform.metering import UsageFilter, UsageLedger, UsageRecordRow
from aiforge.types import GATEWAY_CRASHED, UsageEvent

STARTED = datetime(2025, 6, 1, 12, tzinfo=UTC).timestamp()


def event(i: int) -> UsageEvent:
    return UsageEvent(
        request_id=f"req-{i}",
        key_id=f"k{i % 3}",
        project_id="p1",
        organization_id="o1",
        model="qwen",
        kind="embedding" if i % 5 == 0 else "chat",
        status_code=500 if i % 7 == 0 else 200,
        prompt_tokens=i % 11,
        completion_tokens=i % 13,
        cached_tokens=1,
        ttft_ms=None if i % 2 else 12.5,
        stream=bool(i % 2),
        cancelled=i % 9 == 0,
        started_at=STARTED + i,
    )


def stored(engine: Engine) -> tuple[int, int]:
    with engine.connect() as connection:
        query = select(func.count(), func.sum(UsageRecordRow.total_tokens))
        rows, tokens = connection.execute(query).one()
    return int(rows), int(tokens or 0)


async def test_every_record_lands_once_even_when_replayed(engine: Engine, tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    writer = UsageLedger(engine, journal)
    for i in range(1_000):
        writer.record(event(i))
    (segment,) = journal.glob("*.jsonl")
    copy = segment.read_bytes()
    assert writer.flush() == 1_000
    # The same records again, as if a crash hit between commit and delete.
    (journal / "00000000000000000001-1-replayed.jsonl").write_bytes(copy)
    assert UsageLedger(engine, journal).flush(adopt=True) == 0
    expected_tokens = sum(i % 11 + i % 13 for i in range(1_000))
    assert stored(engine) == (1_000, expected_tokens)


async def test_two_gateways_adopting_the_same_orphans_never_duplicate(
    engine: Engine, tmp_path: Path
) -> None:
    journal = tmp_path / "journal"
    dead = UsageLedger(engine, journal)
    for i in range(600):
        dead.record(event(i))
        if i % 100 == 99:
            segment = dead._journal.seal()
            assert segment is not None
            dead._journal.release(segment)  # its process died: locks gone, files stay
    first, second = UsageLedger(engine, journal), UsageLedger(engine, journal)
    await asyncio.gather(first.start(), second.start())
    await asyncio.gather(first.stop(), second.stop())
    assert stored(engine)[0] == 600
    assert not list(journal.glob("*.jsonl"))


async def test_totals_on_the_migrated_schema(engine: Engine, tmp_path: Path) -> None:
    ledger = UsageLedger(engine, tmp_path / "journal")
    for i in range(30):
        ledger.record(event(i))
    ledger.flush()
    totals = await ledger.totals(group_by="key", filters=UsageFilter(project_id="p1"))
    assert [t.group for t in totals] == ["k0", "k1", "k2"]
    assert sum(t.requests for t in totals) == 30
    assert sum(t.errors for t in totals) == len([i for i in range(30) if i % 7 == 0])
    (day,) = await ledger.totals(group_by="day", filters=UsageFilter())
    assert day.group == "2025-06-01"


def test_crash_placeholders_yield_to_real_records_in_any_order(
    engine: Engine, tmp_path: Path
) -> None:
    """A dead gateway's segments adopted by two gateways: one holds the opened entries, the
    other the final records of half of them. Whichever flushes first, every request ends
    with one row: the real record where there is one, else the ``gateway_crashed`` one."""
    opened, finals = tmp_path / "opened", tmp_path / "finals"
    writer = UsageLedger(engine, opened)
    for i in range(10):
        writer.open(replace(event(i), status_code=502, completion_tokens=0,
                            error_type=GATEWAY_CRASHED))  # fmt: skip
    writer._journal.close()
    UsageLedger(engine, opened).flush(adopt=True)
    late = UsageLedger(engine, finals)
    for i in range(0, 10, 2):
        late.record(event(i))
    late._journal.close()
    UsageLedger(engine, finals).flush(adopt=True)
    with engine.connect() as connection:
        query = select(UsageRecordRow.request_id, UsageRecordRow.error_type)
        rows = {row[0]: row[1] for row in connection.execute(query)}
    assert len(rows) == 10
    assert {rid for rid, error in rows.items() if error == GATEWAY_CRASHED} == {
        f"req-{i}" for i in range(1, 10, 2)
    }
