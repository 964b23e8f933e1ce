"""``BatchStore``: the runner's reads and writes, each its own transaction. Blocking: the
runner calls every method in a worker thread.

:meth:`BatchStore.finish` assembles a finished batch's output and error files from its
stored line results (and, for lines that never ran, the input file): exactly one line per
request, in input order. Both files are written to disk first, then registered with the
batch's final state in one transaction, so a crash while finishing leaves the batch
unfinished (it is finished again on the next start) and no half-made file visible.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import orjson
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from aiforge.platform.batches import repository as repo
from aiforge.platform.batches.lines import InputLine, read_requests
from aiforge.platform.batches.output import (
    LineTokens,
    answered_line,
    not_run_line,
)
from aiforge.platform.batches.plan import line_request_id
from aiforge.platform.batches.table import BatchLineRow, BatchRow
from aiforge.platform.batches.validation import InputCheck, parse_request
from aiforge.platform.files.service import FileService, new_file_id

_STAMPS = {
    "completed": "completed_at", "cancelled": "cancelled_at", "expired": "expired_at",
    "failed": "failed_at", "finalizing": "finalizing_at", "in_progress": "in_progress_at",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class LineResult:
    batch_id: str
    index: int
    custom_id: str
    outcome: str
    status_code: int
    request_id: str
    body: Any
    tokens: LineTokens


class BatchStore:
    def __init__(
        self, sessions: sessionmaker[Session], files: FileService, *, max_line_bytes: int
    ) -> None:
        self._sessions = sessions
        self.files = files
        self.max_line_bytes = max_line_bytes

    def input_path(self, batch: BatchRow) -> Path:
        return self.files.store.path(batch.project_id, batch.input_file_id)

    def requests(self, batch: BatchRow) -> Iterator[InputLine]:
        return read_requests(self.input_path(batch), max_line_bytes=self.max_line_bytes)

    def claim(self, runner: str, lease_s: float) -> Sequence[BatchRow]:
        now = datetime.now(UTC)
        with self._sessions.begin() as session:
            return repo.claim_batches(
                session, runner=runner, now=now, lease_until=now + timedelta(seconds=lease_s)
            )

    def release(self, runner: str) -> None:
        with self._sessions.begin() as session:
            repo.release_batches(session, runner=runner)

    def progress(self, batch_id: str) -> tuple[set[int], dict[int, int]]:
        with self._sessions() as session:
            return repo.line_progress(session, batch_id=batch_id)

    def record_attempt(self, batch_id: str, index: int, attempts: int) -> None:
        with self._sessions.begin() as session:
            repo.record_attempt(session, batch_id=batch_id, line=index, attempts=attempts)

    def store_result(self, result: LineResult) -> bool:
        """Store a line's result (False: it already had one)."""
        try:
            with self._sessions.begin() as session:
                return repo.store_result(
                    session, batch_id=result.batch_id, line=result.index,
                    custom_id=result.custom_id, outcome=result.outcome,
                    status_code=result.status_code, request_id=result.request_id,
                    body=result.body, tokens=result.tokens, now=datetime.now(UTC),
                )  # fmt: skip
        except IntegrityError:  # another runner stored it first
            return False

    def set_status(self, batch_id: str, status: str, *, only_from: tuple[str, ...]) -> bool:
        """Move the batch to ``status`` if it is in one of ``only_from`` (a cancel may have
        come first); whether it moved."""
        with self._sessions.begin() as session:
            row = repo.lock_batch(session, batch_id=batch_id)
            if row is None or row.status not in only_from:
                return False
            row.status = status
            setattr(row, _STAMPS[status], datetime.now(UTC))
            return True

    def validated(self, batch_id: str, check: InputCheck) -> bool:
        """Record a validation: ``in_progress`` with its total, or ``failed`` with its
        errors (unless the batch was cancelled meanwhile)."""
        with self._sessions.begin() as session:
            row = repo.lock_batch(session, batch_id=batch_id)
            if row is None or row.status != "validating":
                return False
            now = datetime.now(UTC)
            if check.ok:
                row.status, row.in_progress_at = "in_progress", now
                row.total, row.model = check.total, check.model
            else:
                row.status, row.failed_at = "failed", now
                row.errors = [error.to_dict() for error in check.errors]
                row.model = check.model
            return True

    def finish(self, batch: BatchRow, final_status: str) -> None:
        """Write the output and error files and move the batch to ``final_status``."""
        started = batch.in_progress_at is not None
        written: list[tuple[str, str, str, int]] = []  # (kind, file id, filename, bytes)
        if started:
            written = self._write_files(batch, final_status)
        with self._sessions.begin() as session:
            row = repo.lock_batch(session, batch_id=batch.id)
            if row is None or row.status not in repo.ACTIVE:
                for _, file_id, _, _ in written:
                    self.files.store.delete(batch.project_id, file_id)
                return
            for _, file_id, filename, size in written:
                self.files.add_output(
                    session, project_id=batch.project_id, file_id=file_id, filename=filename,
                    size=size,
                )  # fmt: skip
            ids = {kind: file_id for kind, file_id, _, _ in written}
            row.output_file_id, row.error_file_id = ids.get("output"), ids.get("errors")
            row.status = final_status
            setattr(row, _STAMPS[final_status], datetime.now(UTC))
            row.runner = row.lease_until = None

    def _write_files(self, batch: BatchRow, final_status: str) -> list[tuple[str, str, str, int]]:
        store = self.files.store
        outputs = {"output": new_file_id(), "errors": new_file_id()}
        handles: dict[str, tuple[IO[bytes], Path]] = {}
        sizes = {"output": 0, "errors": 0}
        try:
            for kind, file_id in outputs.items():
                handles[kind] = store.create(batch.project_id, file_id)
            for kind, line in self._result_lines(batch, final_status):
                data = orjson.dumps(line) + b"\n"
                handles[kind][0].write(data)
                sizes[kind] += len(data)
        except BaseException:
            for handle, partial in handles.values():
                handle.close()
                store.discard(partial)
            raise
        written = []
        for kind, (handle, partial) in handles.items():
            handle.close()
            if sizes[kind] == 0:
                store.discard(partial)
                continue
            store.commit(partial)
            written.append((kind, outputs[kind], f"{batch.id}_{kind}.jsonl", sizes[kind]))
        return written

    def _result_lines(
        self, batch: BatchRow, final_status: str
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """``("output" | "errors", line)`` for every request of the batch, in input order."""
        with self._sessions() as session:
            results = repo.line_results(session, batch_id=batch.id)
            pending: BatchLineRow | None = next(results, None)
            requests: Iterator[InputLine] = iter(())
            with contextlib.suppress(FileNotFoundError):
                requests = self.requests(batch)
            for request in requests:
                while pending is not None and pending.line < request.index:
                    pending = next(results, None)
                if pending is not None and pending.line == request.index:
                    yield _answered(pending)
                    pending = next(results, None)
                    continue
                parsed = parse_request(request.raw, endpoint=batch.endpoint, number=0)
                custom_id = getattr(parsed, "custom_id", f"line-{request.number}")
                yield "errors", not_run_line(
                    custom_id=custom_id, request_id=line_request_id(batch.id, request.index),
                    final_status=final_status,
                )  # fmt: skip
            while pending is not None:  # the input file is gone: the results alone
                yield _answered(pending)
                pending = next(results, None)


def _answered(row: BatchLineRow) -> tuple[str, dict[str, Any]]:
    kind = "output" if row.outcome == "succeeded" else "errors"
    return kind, answered_line(
        custom_id=row.custom_id or "", request_id=row.request_id or "",
        status_code=row.status_code or 0, body=row.body,
    )  # fmt: skip
