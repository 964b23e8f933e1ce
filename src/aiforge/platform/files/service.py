"""``FileService``: the files of each project — stored, listed, read and deleted.

Every method takes the caller's project id; a file of another project does not exist for
it (:class:`NotFound`, a 404). The sync methods do blocking I/O (database, disk): routes run
them in FastAPI's thread pool. :meth:`FileService.upload` is the one async method: it
streams the request body to disk, writing in a worker thread, within the size limit.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from aiforge.platform.domain.errors import Conflict, InvalidRequest, NotFound
from aiforge.platform.files import repository as repo
from aiforge.platform.files.schemas import UPLOAD_PURPOSES
from aiforge.platform.files.storage import FileStore
from aiforge.platform.files.table import FileRow
from aiforge.platform.files.upload import UploadForm, UploadTooLarge, boundary_of

MAX_LIST_LIMIT = 10_000
MULTIPART_OVERHEAD_BYTES = 64 * 1024
"""Room for the multipart framing and text fields beyond the file itself."""

InUse = Callable[[Session, str, str], str | None]
"""``(session, project_id, file_id)`` → why the file may not be deleted now, or None."""


def new_file_id() -> str:
    return f"file-{secrets.token_hex(12)}"


def _not_found(file_id: str) -> NotFound:
    return NotFound(f"No such file: {file_id}", param="file_id", code="file_not_found")


class FileService:
    """See the module docstring. ``in_use`` (set by the batches) guards deletion."""

    def __init__(
        self, sessions: sessionmaker[Session], store: FileStore, *, max_bytes: int
    ) -> None:
        self._sessions = sessions
        self.store = store
        self.max_bytes = max_bytes
        self.in_use: InUse | None = None

    async def upload(
        self,
        project_id: str,
        *,
        content_type: str | None,
        content_length: int | None,
        body: AsyncIterator[bytes],
    ) -> FileRow:
        """Store the ``file`` of a multipart upload with its ``purpose``. Refuses with
        :class:`UploadTooLarge` once the file passes the limit (or at once, when the
        declared length does), :class:`UploadError` for a malformed body, and
        :class:`InvalidRequest` for a bad purpose; nothing is kept then."""
        form = UploadForm(boundary_of(content_type), max_file_bytes=self.max_bytes)
        if (
            content_length is not None
            and content_length > self.max_bytes + MULTIPART_OVERHEAD_BYTES
        ):
            raise UploadTooLarge(
                f"The upload ({content_length} bytes) is larger than this server's limit of "
                f"{self.max_bytes} bytes (AIFORGE_FILES_MAX_BYTES).",
                param="file",
            )
        file_id = new_file_id()
        handle, partial = await asyncio.to_thread(self.store.create, project_id, file_id)
        try:
            with handle:
                async for chunk in body:
                    form.feed(chunk)
                    pending = form.take_file_data()
                    if pending:
                        await asyncio.to_thread(handle.writelines, pending)
                form.finish()
            purpose = _purpose(form.fields.get("purpose"))
            if "expires_after[anchor]" in form.fields or "expires_after[seconds]" in form.fields:
                raise InvalidRequest(
                    "expires_after is not supported here: files are kept until deleted.",
                    param="expires_after",
                )
            assert form.filename is not None
            return await asyncio.to_thread(
                self._register, partial, project_id=project_id, file_id=file_id,
                filename=form.filename, purpose=purpose, size=form.file_bytes,
            )  # fmt: skip
        except BaseException:
            await asyncio.to_thread(self.store.discard, partial)
            raise

    def _register(
        self, partial: Path, *, project_id: str, file_id: str, filename: str, purpose: str,
        size: int,
    ) -> FileRow:  # fmt: skip
        self.store.commit(partial)
        try:
            with self._sessions.begin() as session:
                return repo.add_file(
                    session, file_id=file_id, project_id=project_id, filename=filename,
                    purpose=purpose, size=size, now=datetime.now(UTC),
                )  # fmt: skip
        except BaseException:
            self.store.delete(project_id, file_id)
            raise

    def get(self, project_id: str, file_id: str) -> FileRow:
        with self._sessions() as session:
            row = repo.get_file(session, project_id=project_id, file_id=file_id)
        if row is None:
            raise _not_found(file_id)
        return row

    def content_path(self, project_id: str, file_id: str) -> tuple[FileRow, Path]:
        """The file's row and where its bytes are (404 if either is missing)."""
        row = self.get(project_id, file_id)
        path = self.store.path(project_id, file_id)
        if not path.is_file():
            raise _not_found(file_id)
        return row, path

    def list(
        self,
        project_id: str,
        *,
        purpose: str | None = None,
        limit: int = MAX_LIST_LIMIT,
        order: repo.Order = "desc",
        after: str | None = None,
    ) -> tuple[list[FileRow], bool]:
        """A page of the project's files and whether more follow it."""
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise InvalidRequest(f"limit must be between 1 and {MAX_LIST_LIMIT}", param="limit")
        with self._sessions() as session:
            cursor = None
            if after is not None:
                cursor = repo.get_file(session, project_id=project_id, file_id=after)
                if cursor is None:
                    raise _not_found(after)
            rows = repo.list_files(
                session, project_id=project_id, purpose=purpose, limit=limit + 1,
                order=order, after=cursor,
            )  # fmt: skip
        return list(rows[:limit]), len(rows) > limit

    def delete(self, project_id: str, file_id: str) -> None:
        """Delete the file's row, then its bytes. Refused (409) while a batch that is still
        running reads it."""
        with self._sessions.begin() as session:
            row = repo.get_file(session, project_id=project_id, file_id=file_id)
            if row is None:
                raise _not_found(file_id)
            reason = self.in_use(session, project_id, file_id) if self.in_use else None
            if reason is not None:
                raise Conflict(reason, param="file_id", code="file_in_use")
            repo.delete_file(session, row=row)
        self.store.delete(project_id, file_id)

    def add_output(
        self, session: Session, *, project_id: str, file_id: str, filename: str, size: int
    ) -> FileRow:
        """Register a ``batch_output`` file already written to the store (in the caller's
        transaction: a batch's result files appear with its final state, or not at all)."""
        return repo.add_file(
            session, file_id=file_id, project_id=project_id, filename=filename,
            purpose="batch_output", size=size, now=datetime.now(UTC),
        )  # fmt: skip


def _purpose(value: str | None) -> str:
    if value is None:
        raise InvalidRequest("The upload has no `purpose`.", param="purpose")
    if value not in UPLOAD_PURPOSES:
        allowed = ", ".join(sorted(UPLOAD_PURPOSES))
        raise InvalidRequest(f"Invalid purpose {value!r}; one of: {allowed}.", param="purpose")
    return value
