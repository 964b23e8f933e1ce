"""Journal records to ``usage_records`` rows, and the idempotent batch insert."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Insert, insert, select
from sqlalchemy.dialects import postgresql, sqlite

from aiforge.platform.metering.table import UsageRecordRow
from aiforge.types import GATEWAY_CRASHED

_CHUNK = 1_000
"""Rows per INSERT statement: well under PostgreSQL's 65,535 bind parameters."""


def event_row(record: Mapping[str, Any]) -> dict[str, Any]:
    """A journal record (a serialized :class:`~aiforge.gateway.access.UsageEvent`) as a row."""
    started = datetime.fromtimestamp(float(record.get("started_at") or 0.0), UTC)
    prompt = int(record.get("prompt_tokens") or 0)
    completion = int(record.get("completion_tokens") or 0)
    ttft = record.get("ttft_ms")
    return {
        "request_id": str(record["request_id"]),
        "key_id": str(record.get("key_id", "")),
        "project_id": str(record.get("project_id", "")),
        "organization_id": str(record.get("organization_id", "")),
        "model": str(record.get("model", "")),
        "kind": str(record.get("kind", "")),
        "status_code": int(record.get("status_code") or 0),
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "cached_tokens": int(record.get("cached_tokens") or 0),
        "total_tokens": prompt + completion,
        "deployment": str(record.get("deployment") or ""),
        "replica": str(record.get("replica") or ""),
        "ttft_ms": None if ttft is None else float(ttft),
        "latency_ms": float(record.get("latency_ms") or 0.0),
        "stream": bool(record.get("stream")),
        "cancelled": bool(record.get("cancelled")),
        "error_type": record.get("error_type"),
        "started_at": started,
        "day": started.date(),
    }


def _insert_replacing_placeholders(dialect: str) -> Insert:
    """Insert, or replace a stored ``gateway_crashed`` placeholder of the same request (a real
    record always wins over the one replay made up); any other stored record is kept."""
    if dialect not in ("postgresql", "sqlite"):
        return insert(UsageRecordRow)
    dialect_module: Any = postgresql if dialect == "postgresql" else sqlite
    statement = dialect_module.insert(UsageRecordRow)
    columns = [c.name for c in UsageRecordRow.__table__.columns if c.name not in ("id",)]
    upsert: Insert = statement.on_conflict_do_update(
        index_elements=["request_id"],
        set_={name: statement.excluded[name] for name in columns if name != "request_id"},
        where=UsageRecordRow.error_type == GATEWAY_CRASHED,
    )
    return upsert


def _insert_ignoring_duplicates(dialect: str) -> Insert:
    if dialect == "postgresql":
        return postgresql.insert(UsageRecordRow).on_conflict_do_nothing(
            index_elements=["request_id"]
        )
    if dialect == "sqlite":
        return sqlite.insert(UsageRecordRow).on_conflict_do_nothing(index_elements=["request_id"])
    return insert(UsageRecordRow)


def insert_records(
    connection: Connection,
    records: Iterable[Mapping[str, Any]],
    placeholders: Iterable[Mapping[str, Any]] = (),
) -> int:
    """Insert every record whose ``request_id`` is new; return how many rows were written.

    ``records`` are real records: each replaces a stored ``gateway_crashed`` placeholder of
    its request. ``placeholders`` (records replay made up for requests whose gateway died)
    are written only where their request has no row yet. Idempotent: replaying a segment
    that was (partly) flushed before changes nothing.
    """
    rows = _unique_rows(records)
    real = {row["request_id"] for row in rows}
    made_up = [row for row in _unique_rows(placeholders) if row["request_id"] not in real]
    dialect = connection.dialect.name
    if dialect not in ("postgresql", "sqlite"):
        rows = _not_yet_stored(connection, rows)
        made_up = _not_yet_stored(connection, made_up)
    written = _execute(connection, _insert_replacing_placeholders(dialect), rows)
    return written + _execute(connection, _insert_ignoring_duplicates(dialect), made_up)


def _execute(connection: Connection, statement: Insert, rows: Sequence[dict[str, Any]]) -> int:
    # RETURNING lists only the rows actually written (rowcount is unreliable for batches).
    returning = statement.returning(UsageRecordRow.request_id)
    written = 0
    for start in range(0, len(rows), _CHUNK):
        written += len(connection.execute(returning, rows[start : start + _CHUNK]).all())
    return written


def _unique_rows(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    # A gateway retrying a journal write may log a request twice; the first record wins.
    rows: dict[str, dict[str, Any]] = {}
    for record in records:
        if "request_id" in record:
            row = event_row(record)
            rows.setdefault(row["request_id"], row)
    return list(rows.values())


def _not_yet_stored(connection: Connection, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    ids = [row["request_id"] for row in rows]
    column = UsageRecordRow.request_id
    stored = set(connection.execute(select(column).where(column.in_(ids))).scalars())
    return [row for row in rows if row["request_id"] not in stored]
