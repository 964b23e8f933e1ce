"""``UsageLedger``: the gateway's :class:`~aiforge.gateway.access.UsageSink` that never loses
a record.

``record`` appends to the local journal and returns (microseconds, no database). A flusher
thread seals the active segment every ``flush_interval_s`` and has its records inserted in
one idempotent batch, by the flush worker process when there is one
(:mod:`aiforge.platform.metering.worker`: the Python of reading, sorting and inserting then
never competes with the event loop for the GIL), else in this process. A segment is
deleted only after its batch committed, and stays locked by this process until then.
``start`` first replays every segment left behind (a crash, a ``SIGKILL``, a database
outage, another gateway that died); ``stop`` flushes what is left. Both write in this
process: no request is served yet, or none any more.

Requests in flight when the gateway dies: ``open`` journals an ``{"opened": <provisional
record>}`` entry just before a request goes to a replica (one more append, no fsync). Every
seal journals the opened entry of each request still running here again, at the start of
the new active segment (``Journal.seal(carry=...)``, under the append lock), so it outlives
the sealed segment that is deleted; a flush therefore drops the opened entries of the
segments this process sealed, whichever requests still run. An opened entry in a segment
*adopted* from a dead writer without its final record becomes the request's record (status
502, ``gateway_crashed``, the prompt estimate, no completion tokens — what the replica did
after the crash is unknown). A real record always replaces such a placeholder in the
database, so the order in which gateways adopt a dead one's segments does not matter: every
request that reached a replica has exactly one record.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path

from sqlalchemy import Engine

from aiforge.config import Settings
from aiforge.platform.db.engine import make_engine
from aiforge.platform.limits.admission import BudgetUsage
from aiforge.platform.metering.journal import Journal, Segment, journal_line
from aiforge.platform.metering.queries import GroupBy, UsageFilter, UsageTotal, budget_usage
from aiforge.platform.metering.queries import usage_totals as query_totals
from aiforge.platform.metering.replay import OPENED, write_segments
from aiforge.platform.metering.worker import FlushWorker
from aiforge.types import UsageEvent

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
        flush_worker: FlushWorker | None = None,
    ) -> None:
        """``flush_worker``: writes the periodic flushes' batches in another process; None:
        this process writes them."""
        self.engine = engine
        self._journal = Journal(journal_dir)
        self._flush_interval_s = flush_interval_s
        self._adopt_interval_s = adopt_interval_s
        self._worker = flush_worker
        self._pending: list[Segment] = []
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_adopt = 0.0
        self._running: dict[str, bytes] = {}
        """Request id to the journal line of its opened entry, from ``open`` to ``record``."""

    @classmethod
    def from_settings(cls, settings: Settings, engine: Engine | None = None) -> UsageLedger:
        """A ledger on the configured database (``engine``, if given, is made from the same
        URL), journaling under ``data_dir``, with a flush worker unless turned off."""
        url = settings.resolved_database_url()
        db = engine if engine is not None else make_engine(url)
        worker = FlushWorker(url) if settings.usage_flush_process else None
        return cls(db, settings.data_dir / JOURNAL_DIRNAME, flush_worker=worker)

    def open(self, provisional: UsageEvent) -> None:
        """Journal the record ``provisional`` a replay uses if this process dies before
        :meth:`record` of the same request (one local ``write``)."""
        line = journal_line({OPENED: provisional})
        # Before the append: a seal in between carries the entry (journaled twice, harmless);
        # after it, a seal could delete the only opened entry of a running request.
        self._running[provisional.request_id] = line
        self._journal.write(line)

    def record(self, event: UsageEvent) -> None:
        """Append ``event`` to the journal (in the OS before this returns). Never blocks on I/O
        beyond one local ``write``."""
        self._journal.append(event)
        # Only after the append: a seal in between carries the opened entry to the next
        # segment although the record is in the sealed one. A flush drops it there; adopted
        # after a crash, it is a placeholder, which the real record wins over.
        self._running.pop(event.request_id, None)

    async def start(self) -> None:
        """Replay every unflushed segment into the database, then start the flusher."""
        await asyncio.to_thread(self._flush, adopt=True, worker=None)
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

        With ``adopt``, also take over segments whose writer is gone. The batch goes to the
        flush worker when there is one that runs (or can be started), else it is written
        here. A segment is deleted only after its batch committed; on a database error, or
        a worker that died mid-batch, it stays pending and locked.
        """
        return self._flush(adopt=adopt, worker=self._worker)

    def _flush(self, *, adopt: bool, worker: FlushWorker | None) -> int:
        with self._flush_lock:
            sealed = self._journal.seal(carry=self._carried)
            if sealed is not None:
                self._pending.append(sealed)
            if adopt:
                self._pending.extend(self._journal.adopt_orphans())
                self._last_adopt = time.monotonic()
            if not self._pending:
                return 0
            segments = [(s.path, s.adopted) for s in self._pending]
            inserted = None if worker is None else worker.write(segments)
            if inserted is None:
                inserted = write_segments(self.engine, segments)
            for segment in self._pending:
                self._journal.discard(segment)
            self._pending.clear()
            return inserted

    def _carried(self) -> list[bytes]:
        """The opened entries of the requests running now (called by the seal, under the
        journal's append lock). One copy in C, atomic under the GIL: the event loop thread
        adds and removes ids meanwhile, outside that lock (see ``open`` and ``record``)."""
        return list(self._running.values())

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
        if self._worker is not None:
            self._worker.warm_up()
        while not self._stop.wait(self._flush_interval_s):
            adopt = time.monotonic() - self._last_adopt >= self._adopt_interval_s
            try:
                self.flush(adopt=adopt)
            except Exception:  # the database may be down: keep the journal, retry later
                log.exception("usage ledger: flush failed; records stay in the journal")

    def _final_flush(self) -> None:
        try:
            self._flush(adopt=False, worker=None)
        except Exception:
            log.exception("usage ledger: final flush failed; records stay in the journal")
        finally:
            with self._flush_lock:
                for segment in self._pending:
                    self._journal.release(segment)
                self._pending.clear()
                self._journal.close()
                if self._worker is not None:
                    self._worker.stop()
