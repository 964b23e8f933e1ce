"""``BatchService``: creating, reading and cancelling batches for ``/v1/batches``.

The API side only: a batch is stored ``validating`` and the runner
(:class:`~aiforge.platform.batches.runner.BatchRunner`, woken through ``on_change``) does
the rest. Every method names the caller's project: another project's batch is a 404.
Blocking (database): routes run it in FastAPI's thread pool.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from aiforge.platform.batches import repository as repo
from aiforge.platform.batches.schemas import BatchCreate
from aiforge.platform.batches.table import BatchRow
from aiforge.platform.batches.validation import ENDPOINT_KINDS
from aiforge.platform.domain.errors import Conflict, InvalidRequest, NotFound
from aiforge.platform.files.service import FileService
from aiforge.types import Principal

COMPLETION_WINDOWS = {"24h": timedelta(hours=24)}
MAX_LIST_LIMIT = 100
CANCELLABLE = ("validating", "in_progress")


def new_batch_id() -> str:
    return f"batch_{secrets.token_hex(12)}"


def principal_record(principal: Principal) -> dict[str, object]:
    """``principal`` as stored with a batch (its lines run as it)."""
    record = asdict(principal)
    allowed = principal.allowed_models
    record["allowed_models"] = None if allowed is None else sorted(allowed)
    return record


def _not_found(batch_id: str) -> NotFound:
    return NotFound(f"No such batch: {batch_id}", param="batch_id", code="batch_not_found")


class BatchService:
    def __init__(self, sessions: sessionmaker[Session], files: FileService) -> None:
        self._sessions = sessions
        self._files = files
        self.on_change: Callable[[], None] = lambda: None
        """Called after a batch is created or cancelled (wakes the runner; thread-safe)."""
        files.in_use = self._file_in_use

    def create(self, principal: Principal, request: BatchCreate) -> BatchRow:
        if request.endpoint not in ENDPOINT_KINDS:
            supported = ", ".join(ENDPOINT_KINDS)
            raise InvalidRequest(
                f"Batches here support the endpoints {supported}; not {request.endpoint}.",
                param="endpoint", code="unsupported_endpoint",
            )  # fmt: skip
        project = principal.project_id
        source = self._files.get(project, request.input_file_id)
        if source.purpose != "batch":
            raise InvalidRequest(
                f"The input file must be uploaded with purpose `batch` (it has "
                f"`{source.purpose}`).", param="input_file_id",
            )  # fmt: skip
        now = datetime.now(UTC)
        with self._sessions.begin() as session:
            row = repo.add_batch(
                session, id=new_batch_id(), project_id=project, key_id=principal.key_id,
                principal=principal_record(principal), endpoint=request.endpoint,
                input_file_id=source.id, completion_window=request.completion_window,
                status="validating", batch_metadata=request.metadata, created_at=now,
                expires_at=now + COMPLETION_WINDOWS[request.completion_window],
                total=0, completed=0, failed=0, input_tokens=0, output_tokens=0,
                cached_tokens=0, reasoning_tokens=0,
            )  # fmt: skip
        self.on_change()
        return row

    def get(self, project_id: str, batch_id: str) -> BatchRow:
        with self._sessions() as session:
            row = repo.get_batch(session, project_id=project_id, batch_id=batch_id)
        if row is None:
            raise _not_found(batch_id)
        return row

    def list(
        self, project_id: str, *, limit: int = 20, after: str | None = None
    ) -> tuple[list[BatchRow], bool]:
        """A page of the project's batches, newest first, and whether more follow."""
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise InvalidRequest(f"limit must be between 1 and {MAX_LIST_LIMIT}", param="limit")
        with self._sessions() as session:
            cursor = None
            if after is not None:
                cursor = repo.get_batch(session, project_id=project_id, batch_id=after)
                if cursor is None:
                    raise _not_found(after)
            rows = repo.list_batches(session, project_id=project_id, limit=limit + 1,
                                     after=cursor)  # fmt: skip
        return list(rows[:limit]), len(rows) > limit

    def cancel(self, project_id: str, batch_id: str) -> BatchRow:
        """Ask to cancel: ``cancelling`` now, ``cancelled`` once its running lines end
        (lines not started never run). Cancelling twice is a no-op; a finished batch 409."""
        with self._sessions.begin() as session:
            row = repo.get_batch(session, project_id=project_id, batch_id=batch_id)
            if row is None:
                raise _not_found(batch_id)
            row = repo.lock_batch(session, batch_id=batch_id) or row
            if row.status in CANCELLABLE:
                row.status, row.cancelling_at = "cancelling", datetime.now(UTC)
            elif row.status not in ("cancelling", "cancelled"):
                raise Conflict(
                    f"Batch {batch_id} is {row.status}; it cannot be cancelled.",
                    param="batch_id", code="batch_not_cancellable",
                )  # fmt: skip
        self.on_change()
        return row

    @staticmethod
    def _file_in_use(session: Session, project_id: str, file_id: str) -> str | None:
        batch = repo.active_batch_reading(session, project_id=project_id, file_id=file_id)
        if batch is None:
            return None
        return f"File {file_id} is the input of batch {batch}, still running; cancel it first."
