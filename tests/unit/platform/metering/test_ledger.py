"""The ledger on a SQLite file: idempotent flushes, replay at start, queries and CSV."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from aiforge.platform.db.base import Base
from aiforge.platform.db.engine import make_engine
from aiforge.platform.metering import (
    UsageFilter,
    UsageLedger,
    UsageRecordRow,
    read_segment,
    totals_csv,
)
from aiforge.types import GATEWAY_CRASHED, UsageEvent

DAY1 = datetime(2025, 5, 1, 10, tzinfo=UTC).timestamp()
DAY2 = datetime(2025, 5, 2, 10, tzinfo=UTC).timestamp()


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    db = make_engine(f"sqlite:///{tmp_path / 'usage.db'}")
    Base.metadata.create_all(db, tables=[UsageRecordRow.__table__])  # type: ignore[list-item]
    yield db
    db.dispose()


def event(request_id: str, **overrides: object) -> UsageEvent:
    values: dict[str, object] = {
        "request_id": request_id,
        "key_id": "k1",
        "project_id": "p1",
        "organization_id": "o1",
        "model": "qwen",
        "kind": "chat",
        "status_code": 200,
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "started_at": DAY1,
    }
    values.update(overrides)
    return UsageEvent(**values)  # type: ignore[arg-type]


def count(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(select(func.count()).select_from(UsageRecordRow)).scalar_one()
        )


def test_flush_writes_each_request_once(engine: Engine, tmp_path: Path) -> None:
    ledger = UsageLedger(engine, tmp_path / "journal")
    for i in range(3):
        ledger.record(event(f"r{i}"))
    ledger.record(event("r0"))  # a duplicate record of the same request
    assert ledger.flush() == 3
    assert ledger.flush() == 0
    assert count(engine) == 3
    assert not list((tmp_path / "journal").glob("*.jsonl"))


def test_replaying_a_flushed_segment_changes_nothing(engine: Engine, tmp_path: Path) -> None:
    journal_dir = tmp_path / "journal"
    ledger = UsageLedger(engine, journal_dir)
    ledger.record(event("r1"))
    (segment,) = journal_dir.glob("*.jsonl")
    copy = segment.read_bytes()
    ledger.flush()
    # A crash after the commit but before the delete leaves the segment behind.
    (journal_dir / "00000000000000000001-1-deadbeef.jsonl").write_bytes(copy + b'{"request_')
    assert UsageLedger(engine, journal_dir).flush(adopt=True) == 0
    assert count(engine) == 1


async def test_start_replays_what_a_previous_run_left(engine: Engine, tmp_path: Path) -> None:
    journal_dir = tmp_path / "journal"
    crashed = UsageLedger(engine, journal_dir)
    for i in range(5):
        crashed.record(event(f"r{i}"))
    crashed._journal.close()  # the process is gone: its locks are released
    restarted = UsageLedger(engine, journal_dir, flush_interval_s=0.05)
    await restarted.start()
    assert count(engine) == 5
    restarted.record(event("r5"))
    for _ in range(100):  # the flusher runs every 50 ms
        if count(engine) == 6:
            break
        await asyncio.sleep(0.05)
    await restarted.stop()
    assert count(engine) == 6


async def test_stop_flushes_and_a_database_outage_keeps_the_journal(
    engine: Engine, tmp_path: Path
) -> None:
    journal_dir = tmp_path / "journal"
    broken = make_engine(f"sqlite:///{tmp_path / 'missing-table.db'}")
    ledger = UsageLedger(broken, journal_dir, flush_interval_s=0.05)
    await ledger.start()
    ledger.record(event("r1"))
    await asyncio.sleep(0.2)  # the flusher fails (no table) and keeps the segment
    await ledger.stop()
    broken.dispose()
    (segment,) = journal_dir.glob("*.jsonl")
    assert read_segment(segment)[0]["request_id"] == "r1"
    recovered = UsageLedger(engine, journal_dir)
    await recovered.start()
    await recovered.stop()
    assert count(engine) == 1


async def test_totals_by_group_with_filters_and_csv(engine: Engine, tmp_path: Path) -> None:
    ledger = UsageLedger(engine, tmp_path / "journal")
    ledger.record(event("a", started_at=DAY1))
    ledger.record(event("b", started_at=DAY2, key_id="k2", model="other", cached_tokens=4))
    ledger.record(
        event("c", started_at=DAY2, status_code=500, prompt_tokens=0, completion_tokens=0)
    )
    ledger.record(event("d", started_at=DAY2, project_id="p2"))
    ledger.flush()
    by_day = await ledger.totals(group_by="day", filters=UsageFilter(project_id="p1"))
    assert [(t.group, t.requests, t.errors, t.total_tokens) for t in by_day] == [
        ("2025-05-01", 1, 0, 15),
        ("2025-05-02", 2, 1, 15),
    ]
    since = datetime.fromtimestamp(DAY2, UTC) - timedelta(hours=1)
    by_key = await ledger.totals(group_by="key", filters=UsageFilter(since=since, project_id="p1"))
    assert [(t.group, t.requests, t.cached_tokens) for t in by_key] == [("k1", 1, 0), ("k2", 1, 4)]
    until = datetime.fromtimestamp(DAY2, UTC)
    by_model = await ledger.totals(group_by="model", filters=UsageFilter(until=until))
    assert [(t.group, t.requests) for t in by_model] == [("qwen", 1)]
    csv_text = totals_csv(by_day, "day")
    assert csv_text.splitlines() == [
        "day,requests,errors,prompt_tokens,completion_tokens,cached_tokens,total_tokens",
        "2025-05-01,1,0,10,5,0,15",
        "2025-05-02,2,1,10,5,4,15",
    ]


async def test_budget_usage_counts_this_day_and_month(engine: Engine, tmp_path: Path) -> None:
    ledger = UsageLedger(engine, tmp_path / "journal")
    ledger.record(event("a", started_at=DAY1))
    ledger.record(event("b", started_at=DAY2))
    ledger.record(event("c", started_at=DAY2 - 40 * 86_400))  # last month
    ledger.flush()
    usage = {(u.scope, u.subject_id): u for u in await ledger.budget_usage(DAY2 + 60)}
    assert usage[("key", "k1")].day_tokens == 15
    assert usage[("key", "k1")].month_tokens == 30
    assert usage[("project", "p1")].month_tokens == 30


def provisional(request_id: str) -> UsageEvent:
    return event(
        request_id, status_code=502, prompt_tokens=9, completion_tokens=0,
        error_type=GATEWAY_CRASHED,
    )  # fmt: skip


def rows(engine: Engine) -> dict[str, tuple[int, int, int, str | None]]:
    table = UsageRecordRow
    columns = (table.request_id, table.status_code, table.prompt_tokens,
               table.completion_tokens, table.error_type)  # fmt: skip
    with engine.connect() as connection:
        return {r[0]: tuple(r[1:]) for r in connection.execute(select(*columns))}  # type: ignore[misc]


def test_requests_running_across_flushes_keep_their_opened_entry(
    engine: Engine, tmp_path: Path
) -> None:
    journal_dir = tmp_path / "journal"
    ledger = UsageLedger(engine, journal_dir)
    ledger.open(provisional("done"))
    ledger.record(event("done"))
    ledger.open(provisional("long"))
    ledger.open(provisional("late"))
    assert ledger.flush() == 1  # only the finished request; the others are running
    ledger.record(event("late"))
    ledger.flush()
    # The one still running is journaled again, in the active segment, for a crash now.
    entries = [e for s in journal_dir.glob("*.jsonl") for e in read_segment(s)]
    assert [e["opened"]["request_id"] for e in entries if "opened" in e] == ["long"]
    ledger.record(event("long", completion_tokens=7))
    ledger.flush()
    assert rows(engine) == {"done": (200, 10, 5, None), "late": (200, 10, 5, None),
                            "long": (200, 10, 7, None)}  # fmt: skip
    assert not list(journal_dir.glob("*.jsonl"))


def test_a_dead_gateways_open_requests_get_exactly_one_record(
    engine: Engine, tmp_path: Path
) -> None:
    journal_dir = tmp_path / "journal"
    dead = UsageLedger(engine, journal_dir)
    dead.open(provisional("finished"))
    dead.record(event("finished"))
    dead.open(provisional("cut-early"))
    dead.flush()  # the opened entry of cut-early moves to a new segment
    dead.open(provisional("cut-late"))
    dead._journal.close()  # SIGKILL: the locks are gone, the segments stay
    assert UsageLedger(engine, journal_dir).flush(adopt=True) == 2
    assert rows(engine) == {
        "finished": (200, 10, 5, None),
        "cut-early": (502, 9, 0, GATEWAY_CRASHED),
        "cut-late": (502, 9, 0, GATEWAY_CRASHED),
    }


def test_a_real_record_replaces_a_placeholder_but_nothing_else(
    engine: Engine, tmp_path: Path
) -> None:
    # Two gateways adopted a dead one's segments: one got the opened entry, one the record.
    first, second = tmp_path / "a", tmp_path / "b"
    writer = UsageLedger(engine, first)
    writer.open(provisional("r1"))
    writer.open(provisional("r2"))
    writer.record(event("r2"))
    writer._journal.close()
    UsageLedger(engine, first).flush(adopt=True)
    assert rows(engine)["r1"][3] == GATEWAY_CRASHED
    late = UsageLedger(engine, second)
    late.record(event("r1", completion_tokens=3))
    late.open(provisional("r2"))
    late._journal.close()
    UsageLedger(engine, second).flush(adopt=True)
    assert rows(engine) == {"r1": (200, 10, 3, None), "r2": (200, 10, 5, None)}


@pytest.mark.parametrize("crash", [False, True])
def test_a_record_sealed_while_its_request_still_counts_as_running(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash: bool
) -> None:
    """``record`` appended the final record, then a seal ran before ``record`` took the
    request out of the running set: the sealed segment holds the record, and the seal also
    carried the request's opened entry into the next segment. Redundant and harmless: a
    flush drops that entry; adopted after a crash, it is a placeholder the record wins over."""
    journal_dir = tmp_path / "journal"
    ledger = UsageLedger(engine, journal_dir)
    appended, resume = threading.Event(), threading.Event()
    append = ledger._journal.append

    def append_then_pause(record: object) -> None:
        append(record)
        appended.set()
        resume.wait(10)

    monkeypatch.setattr(ledger._journal, "append", append_then_pause)
    ledger.open(provisional("r1"))
    recorder = threading.Thread(target=ledger.record, args=(event("r1"),))
    recorder.start()
    try:
        assert appended.wait(10)
        assert ledger.flush() == 1  # the real record, from the sealed segment
    finally:
        resume.set()
        recorder.join()
    (carried,) = journal_dir.glob("*.jsonl")
    assert [e["opened"]["request_id"] for e in read_segment(carried)] == ["r1"]
    if crash:
        ledger._journal.close()  # SIGKILL: another gateway adopts the carried entry
        assert UsageLedger(engine, journal_dir).flush(adopt=True) == 0
    else:
        assert ledger.flush() == 0
    assert rows(engine) == {"r1": (200, 10, 5, None)}
    assert not list(journal_dir.glob("*.jsonl"))
