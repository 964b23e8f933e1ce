"""The wire shapes of ``/v1/files`` (OpenAI's ``OpenAIFile``, ``ListFilesResponse``,
``DeleteFileResponse``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from aiforge.platform.files.table import FileRow

UPLOAD_PURPOSES = frozenset({"assistants", "batch", "fine-tune", "vision", "user_data"})
"""Purposes a client may upload with (``batch_output`` files are written by batches)."""
BATCH_OUTPUT = "batch_output"


class FilePublic(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["processed"] = "processed"

    @classmethod
    def of(cls, row: FileRow) -> FilePublic:
        return cls(
            id=row.id, bytes=row.bytes, created_at=int(row.created_at.timestamp()),
            filename=row.filename, purpose=row.purpose,
        )  # fmt: skip


class FileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FilePublic]
    first_id: str | None
    last_id: str | None
    has_more: bool


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True
