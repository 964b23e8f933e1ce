"""The wire shapes of ``/v1/batches`` (OpenAI's ``CreateBatchRequest``, ``Batch``,
``ListBatchesResponse``). Unset fields are left out of answers (``exclude_none``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from aiforge.platform.batches.table import BatchRow

MAX_METADATA_KEYS = 16
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 512


class BatchCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")

    input_file_id: str = Field(min_length=1, max_length=64)
    endpoint: str
    completion_window: Literal["24h"]
    metadata: dict[str, str] | None = None

    @field_validator("metadata")
    @classmethod
    def _bounded(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return None
        if len(value) > MAX_METADATA_KEYS:
            raise ValueError(f"at most {MAX_METADATA_KEYS} keys")
        for key, item in value.items():
            if len(key) > MAX_METADATA_KEY_CHARS or len(item) > MAX_METADATA_VALUE_CHARS:
                raise ValueError(
                    f"keys are at most {MAX_METADATA_KEY_CHARS} characters, values at most "
                    f"{MAX_METADATA_VALUE_CHARS}"
                )
        return value


class RequestCounts(BaseModel):
    total: int
    completed: int
    failed: int


class BatchErrors(BaseModel):
    object: Literal["list"] = "list"
    data: list[dict[str, Any]]


def _stamp(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp())


class BatchPublic(BaseModel):
    id: str
    object: Literal["batch"] = "batch"
    endpoint: str
    model: str | None = None
    errors: BatchErrors | None = None
    input_file_id: str
    completion_window: str
    status: str
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: RequestCounts
    usage: dict[str, Any] | None = None
    metadata: dict[str, str] | None = None

    @classmethod
    def of(cls, row: BatchRow) -> BatchPublic:
        errors = BatchErrors(data=[_error(e) for e in row.errors]) if row.errors else None
        return cls(
            id=row.id, endpoint=row.endpoint, model=row.model, errors=errors,
            input_file_id=row.input_file_id, completion_window=row.completion_window,
            status=row.status, output_file_id=row.output_file_id,
            error_file_id=row.error_file_id, created_at=int(row.created_at.timestamp()),
            in_progress_at=_stamp(row.in_progress_at), expires_at=_stamp(row.expires_at),
            finalizing_at=_stamp(row.finalizing_at), completed_at=_stamp(row.completed_at),
            failed_at=_stamp(row.failed_at), expired_at=_stamp(row.expired_at),
            cancelling_at=_stamp(row.cancelling_at), cancelled_at=_stamp(row.cancelled_at),
            request_counts=RequestCounts(
                total=row.total, completed=row.completed, failed=row.failed
            ),
            usage=_usage(row), metadata=row.batch_metadata,
        )  # fmt: skip


def _error(error: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in error.items() if value is not None}


def _usage(row: BatchRow) -> dict[str, Any]:
    return {
        "input_tokens": row.input_tokens,
        "input_tokens_details": {"cached_tokens": row.cached_tokens},
        "output_tokens": row.output_tokens,
        "output_tokens_details": {"reasoning_tokens": row.reasoning_tokens},
        "total_tokens": row.input_tokens + row.output_tokens,
    }


class BatchList(BaseModel):
    object: Literal["list"] = "list"
    data: list[BatchPublic]
    first_id: str | None
    last_id: str | None
    has_more: bool
