"""Journal records to ``usage_records`` rows, and the idempotent batch insert.

The flusher inserts every record of a flush in one ``executemany`` of a statement compiled
once per database dialect: a record becomes one tuple of column values, converted by the
dialect's own bind processors (the same conversions SQLAlchemy applies), and no per-row
statement compilation, parameter dictionary or ``RETURNING`` row is made. The count of rows
written is the driver's cumulated row count (SQLite's changes, psycopg's affected rows), in
which a conflicting row left alone counts zero.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Dialect, Insert, insert, literal_column, select
from sqlalchemy.dialects import postgresql, sqlite

from aiforge.platform.metering.table import UsageRecordRow
from aiforge.types import GATEWAY_CRASHED

COLUMNS: tuple[str, ...] = (
    "request_id", "key_id", "project_id", "organization_id", "model", "kind", "status_code",
    "prompt_tokens", "completion_tokens", "cached_tokens", "total_tokens", "deployment",
    "replica", "ttft_ms", "latency_ms", "stream", "cancelled", "error_type", "started_at",
    "day",
)  # fmt: skip
"""The columns a record fills, in the order of :func:`event_values` (all but ``id``)."""

Values = tuple[Any, ...]


def event_values(record: Mapping[str, Any], request_id: str) -> Values:
    """A journal record (a serialized :class:`~aiforge.gateway.access.UsageEvent`) as the
    values of :data:`COLUMNS`; ``request_id`` is its ``str(record["request_id"])``."""
    get = record.get
    started = datetime.fromtimestamp(float(get("started_at") or 0.0), UTC)
    prompt = int(get("prompt_tokens") or 0)
    completion = int(get("completion_tokens") or 0)
    ttft = get("ttft_ms")
    return (
        request_id,
        str(get("key_id", "")),
        str(get("project_id", "")),
        str(get("organization_id", "")),
        str(get("model", "")),
        str(get("kind", "")),
        int(get("status_code") or 0),
        prompt,
        completion,
        int(get("cached_tokens") or 0),
        prompt + completion,
        str(get("deployment") or ""),
        str(get("replica") or ""),
        None if ttft is None else float(ttft),
        float(get("latency_ms") or 0.0),
        bool(get("stream")),
        bool(get("cancelled")),
        get("error_type"),
        started,
        started.date(),
    )


def event_row(record: Mapping[str, Any]) -> dict[str, Any]:
    """A journal record as a row (column name to value)."""
    return dict(zip(COLUMNS, event_values(record, str(record["request_id"])), strict=True))


def _upsert_replacing_placeholders(dialect: str) -> Insert:
    """Insert, or replace a stored ``gateway_crashed`` placeholder of the same request (a real
    record always wins over the one replay made up); any other stored record is kept."""
    dialect_module: Any = postgresql if dialect == "postgresql" else sqlite
    statement = dialect_module.insert(UsageRecordRow)
    # A literal, not a bound parameter: the statement's only parameters are the columns.
    crashed: Any = literal_column("'" + GATEWAY_CRASHED.replace("'", "''") + "'")
    upsert: Insert = statement.on_conflict_do_update(
        index_elements=["request_id"],
        set_={name: statement.excluded[name] for name in COLUMNS if name != "request_id"},
        where=UsageRecordRow.error_type == crashed,
    )
    return upsert


def _insert_ignoring_duplicates(dialect: str) -> Insert:
    dialect_module: Any = postgresql if dialect == "postgresql" else sqlite
    statement: Insert = dialect_module.insert(UsageRecordRow).on_conflict_do_nothing(
        index_elements=["request_id"]
    )
    return statement


@dataclass(frozen=True, slots=True)
class PreparedInsert:
    """A statement compiled for one dialect, executed with many rows of values at once."""

    sql: str
    positions: tuple[int, ...] | None
    """Positional paramstyle: which value goes to each placeholder. None: named."""
    reordered: bool
    """The placeholders are not in the order of :data:`COLUMNS`."""
    processors: tuple[tuple[int, Callable[[Any], Any]], ...]
    """The dialect's conversion of each column value that has one, by position in a row."""

    @classmethod
    def compile(cls, statement: Insert, dialect: Dialect) -> PreparedInsert:
        compiled = statement.compile(dialect=dialect, column_keys=list(COLUMNS))
        if set(compiled.binds) != set(COLUMNS):
            raise ValueError(f"unexpected parameters {sorted(compiled.binds)}")
        table = UsageRecordRow.__table__.columns
        processors = []
        for index, name in enumerate(COLUMNS):
            processor = table[name].type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                processors.append((index, processor))
        positions = None
        if compiled.positiontup is not None:
            positions = tuple(COLUMNS.index(name) for name in compiled.positiontup)
        reordered = positions is not None and positions != tuple(range(len(COLUMNS)))
        return cls(compiled.string, positions, reordered, tuple(processors))

    def execute(self, connection: Connection, rows: Sequence[Values]) -> int:
        """Insert ``rows`` (values of :data:`COLUMNS`); return how many rows were written."""
        if not rows:
            return 0
        parameters: list[Any] = [self._parameters(row) for row in rows]
        return int(connection.exec_driver_sql(self.sql, parameters).rowcount)

    def _parameters(self, row: Values) -> Values | dict[str, Any]:
        if self.processors:
            converted = list(row)
            for index, processor in self.processors:
                converted[index] = processor(converted[index])
            row = tuple(converted)
        if self.positions is None:
            return dict(zip(COLUMNS, row, strict=True))
        if self.reordered:
            return tuple(row[i] for i in self.positions)
        return row


_prepared: dict[tuple[type[Dialect], str, str], PreparedInsert] = {}
_prepared_lock = threading.Lock()


def _prepared_inserts(dialect: Dialect) -> tuple[PreparedInsert, PreparedInsert]:
    """The (upsert, insert-or-ignore) pair for ``dialect``, compiled once per process."""
    found = []
    for kind in ("upsert", "ignore"):
        key = (type(dialect), dialect.paramstyle, kind)
        prepared = _prepared.get(key)
        if prepared is None:
            name = dialect.name
            statement = (
                _upsert_replacing_placeholders(name)
                if kind == "upsert"
                else _insert_ignoring_duplicates(name)
            )
            prepared = PreparedInsert.compile(statement, dialect)
            with _prepared_lock:
                _prepared[key] = prepared
        found.append(prepared)
    return found[0], found[1]


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
    rows = _unique_values(records)
    made_up = _unique_values(placeholders)
    for request_id in rows.keys() & made_up.keys():
        del made_up[request_id]
    dialect = connection.dialect
    if dialect.name not in ("postgresql", "sqlite"):
        return _insert_new_only(connection, [*rows.values(), *made_up.values()])
    upsert, ignore = _prepared_inserts(dialect)
    written = upsert.execute(connection, list(rows.values()))
    return written + ignore.execute(connection, list(made_up.values()))


def _unique_values(records: Iterable[Mapping[str, Any]]) -> dict[str, Values]:
    # A gateway retrying a journal write may log a request twice; the first record wins.
    rows: dict[str, Values] = {}
    for record in records:
        if "request_id" in record:
            request_id = str(record["request_id"])
            if request_id not in rows:
                rows[request_id] = event_values(record, request_id)
    return rows


def _insert_new_only(connection: Connection, rows: Sequence[Values]) -> int:
    """Another database: insert the rows whose request has none yet (no upsert there)."""
    ids = [row[0] for row in rows]
    column = UsageRecordRow.request_id
    stored = set(connection.execute(select(column).where(column.in_(ids))).scalars())
    new = [dict(zip(COLUMNS, row, strict=True)) for row in rows if row[0] not in stored]
    if new:
        connection.execute(insert(UsageRecordRow), new)
    return len(new)
