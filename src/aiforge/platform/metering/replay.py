"""Sealed journal segments to one idempotent batch: which entries are records, which become
placeholders, and the insert of them all in one transaction.

Shared by the two places a batch is written: the gateway's own flush (at start, at stop,
and whenever the flush worker cannot run) and the flush worker process
(:mod:`aiforge.platform.metering.flusher`). Neither deletes a segment: whoever holds its
lock does, once the batch committed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from aiforge.platform.metering.journal import read_segment
from aiforge.platform.metering.rows import insert_records

OPENED = "opened"
"""Journal entry ``{"opened": <provisional record>}``: a request sent to a replica."""


@dataclass
class ReplayBatch:
    """Journal entries sorted for the database (pure bookkeeping)."""

    records: list[Mapping[str, Any]] = field(default_factory=list)
    placeholders: list[Mapping[str, Any]] = field(default_factory=list)
    """Provisional records of requests whose gateway died before their final record."""


def sort_entries(segments: Iterable[tuple[bool, list[dict[str, Any]]]]) -> ReplayBatch:
    """Split the entries of ``(adopted, entries)`` segments into records and placeholders.

    An opened entry whose request has no final record in the batch becomes a placeholder
    only in a segment adopted from a dead writer. In a segment this process sealed it is
    dropped, without knowing which requests still run here: one still running when the
    segment was sealed had its opened entry carried to the next segment by the seal, and
    one that finished since has its record in a later segment.
    """
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
        if adopted and str(provisional.get("request_id")) not in finished:
            batch.placeholders.append(provisional)
    return batch


def write_segments(engine: Engine, segments: Sequence[tuple[Path, bool]]) -> int:
    """Read the segments ``(path, adopted)``, sort their entries and insert them in one
    transaction; return the rows written. Idempotent (a replay changes nothing)."""
    batch = sort_entries((adopted, read_segment(path)) for path, adopted in segments)
    with engine.begin() as connection:
        return insert_records(connection, batch.records, batch.placeholders)
