"""``UsageLedger``: the gateway's :class:`~aiforge.gateway.access.UsageSink` that never loses
a record.

``record`` appends to the local journal and returns (microseconds, no database). A flusher
thread seals the active segment every ``flush_interval_s``, inserts its records in one
idempotent batch and deletes the segment only after the commit. ``start`` first replays
every segment left behind (a crash, a ``SIGKILL``, a database outage, another gateway that
died); ``stop`` flushes what is left.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path

from sqlalchemy import Engine

from aiforge.config import Settings
from aiforge.gateway.access import UsageEvent
from aiforge.platform.db.engine import make_engine
from aiforge.platform.limits.admission import BudgetUsage
from aiforge.platform.metering.journal import Journal, Segment, read_segment
from aiforge.platform.metering.queries import GroupBy, UsageFilter, UsageTotal, budget_usage
from aiforge.platform.metering.queries import usage_totals as query_totals
from aiforge.platform.metering.rows import insert_records

log = logging.getLogger(__name__)

JOURNAL_DIRNAME = "usage-journal"


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

    @classmethod
    def from_settings(cls, settings: Settings, engine: Engine | None = None) -> UsageLedger:
        """A ledger on the configured database, journaling under ``data_dir``."""
        db = engine if engine is not None else make_engine(settings.resolved_database_url())
        return cls(db, settings.data_dir / JOURNAL_DIRNAME)

    def record(self, event: UsageEvent) -> None:
        """Append ``event`` to the journal (in the OS before this returns). Never blocks on I/O
        beyond one local ``write``."""
        self._journal.append(event)

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
            inserted = 0
            while self._pending:
                segment = self._pending[0]
                records = read_segment(segment.path)
                with self.engine.begin() as connection:
                    inserted += insert_records(connection, records)
                self._pending.pop(0)
                self._journal.discard(segment)
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
