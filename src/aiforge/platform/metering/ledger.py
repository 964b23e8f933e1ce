"""``UsageLedger``: the gateway's :class:`~aiforge.gateway.access.UsageSink` that never loses
a record.

``record`` appends to the local journal and returns (microseconds, no database). A flusher
thread seals the active segment every ``flush_interval_s``, inserts its records in one
idempotent batch and deletes the segment only after the commit. ``start`` first replays
every segment left behind (a crash, a ``SIGKILL``, a database outage, another gateway that
died); ``stop`` flushes what is left.

Requests in flight when the gateway dies: ``open`` journals an ``{"opened": <provisional
record>}`` entry just before a request goes to a replica (one more append, no fsync). A
flush drops an opened entry once its final record is journaled; one whose request is still
running here is appended again to the active segment, so it outlives the sealed segment
that is deleted. An opened entry in a segment *adopted* from a dead writer without its final
record becomes the request's record (status 502, ``gateway_crashed``, the prompt estimate,
no completion tokens — what the replica did after the crash is unknown). A real record
always replaces such a placeholder in the database, so the order in which gateways adopt a
dead one's segments does not matter: every request that reached a replica has exactly one
record.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from aiforge.config import Settings
from aiforge.platform.db.engine import make_engine
from aiforge.platform.limits.admission import BudgetUsage
from aiforge.platform.metering.journal import Journal, Segment, read_segment
from aiforge.platform.metering.queries import GroupBy, UsageFilter, UsageTotal, budget_usage
from aiforge.platform.metering.queries import usage_totals as query_totals
from aiforge.platform.metering.rows import insert_records
from aiforge.types import UsageEvent

log = logging.getLogger(__name__)

JOURNAL_DIRNAME = "usage-journal"
OPENED = "opened"
"""Journal entry ``{"opened": <provisional record>}``: a request sent to a replica."""


@dataclass
class ReplayBatch:
    """Journal entries sorted for the database (pure bookkeeping)."""

    records: list[Mapping[str, Any]] = field(default_factory=list)
    placeholders: list[Mapping[str, Any]] = field(default_factory=list)
    """Provisional records of requests whose gateway died before their final record."""
    carried: list[Mapping[str, Any]] = field(default_factory=list)
    """Opened entries of requests still running in this process (journal them again)."""


def sort_entries(
    segments: Iterable[tuple[bool, list[dict[str, Any]]]], running: set[str] | frozenset[str]
) -> ReplayBatch:
    """Split ``(adopted, entries)`` per segment into records, placeholders and carried
    opened entries. ``running``: request ids this process has opened and not yet recorded."""
    batch = ReplayBatch()
    opened: list[tuple[bool, Mapping[str, Any]]] = []
    for adopted, entries in segments:
        for entry in entries:
            provisional = entry.get(OPENED)
            if isinstance(provisional, dict):
                opened.append((adopted, provisional))
            else:
                batch.records.append(entry)
    finished = {str(r.get("request_id")) for r in batch.records}
    for adopted, provisional in opened:
        request_id = str(provisional.get("request_id"))
        if request_id in finished:
            continue
        if adopted:
            batch.placeholders.append(provisional)
        elif request_id in running:
            batch.carried.append(provisional)
        # else: its final record went to the active segment after the seal.
    return batch


class UsageLedger:
    """Durable, batched usage metering (journal first, database second)."""

    def __init__(
        self,
        engine: Engine,
        journal_dir: Path,
        *,
        flush_interval_s: float = 0.5,
        adopt_interval_s: float = 10.0,
    ) -> None:
        self.engine = engine
        self._journal = Journal(journal_dir)
        self._flush_interval_s = flush_interval_s
        self._adopt_interval_s = adopt_interval_s
        self._pending: list[Segment] = []
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_adopt = 0.0
        self._running: set[str] = set()

    @classmethod
    def from_settings(cls, settings: Settings, engine: Engine | None = None) -> UsageLedger:
        """A ledger on the configured database, journaling under ``data_dir``."""
        db = engine if engine is not None else make_engine(settings.resolved_database_url())
        return cls(db, settings.data_dir / JOURNAL_DIRNAME)

    def open(self, provisional: UsageEvent) -> None:
        """Journal the record ``provisional`` a replay uses if this process dies before
        :meth:`record` of the same request (one local ``write``)."""
        self._running.add(provisional.request_id)
        self._journal.append({OPENED: provisional})

    def record(self, event: UsageEvent) -> None:
        """Append ``event`` to the journal (in the OS before this returns). Never blocks on I/O
        beyond one local ``write``."""
        self._journal.append(event)
        # Only after the append: a flush that no longer sees the id running finds the record.
        self._running.discard(event.request_id)

    async def start(self) -> None:
        """Replay every unflushed segment into the database, then start the flusher."""
        await asyncio.to_thread(self.flush, adopt=True)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="usage-flusher", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Stop the flusher and write everything still journaled. Segments the database
        refused stay on disk for the next start."""
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        await asyncio.to_thread(self._final_flush)

    def flush(self, *, adopt: bool = False) -> int:
        """Seal the active segment and write every pending one; return the new rows.

        With ``adopt``, also take over segments whose writer is gone. A segment is deleted
        only after its batch committed; on a database error it stays pending and locked.
        """
        with self._flush_lock:
            sealed = self._journal.seal()
            if sealed is not None:
                self._pending.append(sealed)
            if adopt:
                self._pending.extend(self._journal.adopt_orphans())
                self._last_adopt = time.monotonic()
            if not self._pending:
                return 0
            segments = [(s.adopted, read_segment(s.path)) for s in self._pending]
            batch = sort_entries(segments, frozenset(self._running))
            # Before the sealed segments go: the opened entries must stay in the journal.
            for provisional in batch.carried:
                self._journal.append({OPENED: provisional})
            with self.engine.begin() as connection:
                inserted = insert_records(connection, batch.records, batch.placeholders)
            for segment in self._pending:
                self._journal.discard(segment)
            self._pending.clear()
            return inserted

    async def totals(self, *, group_by: GroupBy, filters: UsageFilter) -> list[UsageTotal]:
        """Totals of the flushed records (the journal lags by at most one flush interval)."""

        def query() -> list[UsageTotal]:
            with self.engine.connect() as connection:
                return query_totals(connection, group_by=group_by, filters=filters)

        return await asyncio.to_thread(query)

    async def budget_usage(self, now: float | None = None) -> list[BudgetUsage]:
        """This day's and month's tokens per key and project (to re-seed in-memory budgets)."""
        moment = time.time() if now is None else now

        def query() -> list[BudgetUsage]:
            with self.engine.connect() as connection:
                return budget_usage(connection, moment)

        return await asyncio.to_thread(query)

    def _run(self) -> None:
        while not self._stop.wait(self._flush_interval_s):
            adopt = time.monotonic() - self._last_adopt >= self._adopt_interval_s
            try:
                self.flush(adopt=adopt)
            except Exception:  # the database may be down: keep the journal, retry later
                log.exception("usage ledger: flush failed; records stay in the journal")

    def _final_flush(self) -> None:
        try:
            self.flush()
        except Exception:
            log.exception("usage ledger: final flush failed; records stay in the journal")
        finally:
            with self._flush_lock:
                for segment in self._pending:
                    self._journal.release(segment)
                self._pending.clear()
                self._journal.close()
