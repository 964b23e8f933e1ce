"""An append-only usage journal: segment files of JSON lines, owned through file locks.

``append`` writes one line with one ``write(2)`` on an ``O_APPEND`` descriptor: once it
returns, the record is in the OS and survives the process being killed (``SIGKILL``);
``fsync`` runs in batches when a segment is sealed, for power loss.

Ownership: a process holds an exclusive ``flock`` on every segment it is still
responsible for (the active one and sealed ones not yet flushed). A lock dies with its
process, so any segment that can be locked has no live owner: another process (or this one
after a restart) may adopt it, flush it and delete it. Several gateways may therefore share
one data dir, and a killed gateway's records are picked up by the next start.

Sealing may *carry* lines into the next segment (``seal(carry=...)``): entries that must
outlive the sealed one (the ledger's opened entries of requests still running). They are
written under the same lock as the swap, so no append can fall between the writer's
snapshot of what to carry and the segment it is carried to.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger(__name__)

SEGMENT_SUFFIX = ".jsonl"


def journal_line(record: object) -> bytes:
    """``record`` as one journal line (JSON, then a newline), for :meth:`Journal.write`."""
    return orjson.dumps(record) + b"\n"


@dataclass(slots=True)
class Segment:
    """A journal file this process holds locked."""

    path: Path
    fd: int
    records: int = 0
    adopted: bool = False
    """Written by a process that is gone (a crash, or a previous run)."""


def read_segment(path: Path) -> list[dict[str, Any]]:
    """Every complete record of a segment.

    A line that does not parse (the torn tail of a write cut off by a crash or power loss)
    is skipped with a warning: it never became a durable record.
    """
    records: list[dict[str, Any]] = []
    for number, line in enumerate(path.read_bytes().split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError:
            log.warning("usage journal %s: skipping torn line %d", path.name, number)
            continue
        if isinstance(value, dict):
            records.append(value)
    return records


class Journal:
    """The journal directory as one writer sees it. ``append`` is thread-safe."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._active: Segment | None = None
        self._owned: set[str] = set()

    def append(self, record: dict[str, Any] | object) -> None:
        """Write one record as one line, to the OS, before returning."""
        self.write(journal_line(record))

    def write(self, line: bytes) -> None:
        """Write one line made by :func:`journal_line`, to the OS, before returning."""
        with self._lock:
            if self._active is None:
                self._active = self._create_segment()
            os.write(self._active.fd, line)
            self._active.records += 1

    def seal(self, carry: Callable[[], Collection[bytes]] | None = None) -> Segment | None:
        """Close the active segment for writing (fsync'd) and hand it over; None if empty.

        ``carry`` is called under the append lock, right after the swap, and the lines it
        returns (each made by :func:`journal_line`) start the new active segment, in one
        ``write``. Nothing is carried when there was nothing to seal: then no line was
        appended since the last seal, which carried everything that had to outlive it.
        """
        with self._lock:
            segment, self._active = self._active, None
            if segment is not None and carry is not None:
                lines = carry()
                if lines:
                    self._active = self._create_segment()
                    os.write(self._active.fd, b"".join(lines))
                    self._active.records = len(lines)
        if segment is not None:
            os.fsync(segment.fd)
        return segment

    def sync(self) -> None:
        """fsync the active segment (a batch of appends) without sealing it."""
        with self._lock:
            if self._active is not None:
                os.fsync(self._active.fd)

    def adopt_orphans(self) -> Iterator[Segment]:
        """Lock and yield every segment whose owner is gone (crashed, or a previous run)."""
        for path in sorted(self.directory.glob(f"*{SEGMENT_SUFFIX}")):
            if path.name in self._owned:
                continue
            segment = self._try_lock(path)
            if segment is not None:
                self._owned.add(path.name)
                yield segment

    def discard(self, segment: Segment) -> None:
        """The segment's records are in the database: delete it, then let go of the lock."""
        try:
            segment.path.unlink(missing_ok=True)
        finally:
            self._owned.discard(segment.path.name)
            os.close(segment.fd)

    def release(self, segment: Segment) -> None:
        """Give up a segment without deleting it (another process may adopt it)."""
        self._owned.discard(segment.path.name)
        os.close(segment.fd)

    def close(self) -> None:
        """Release the active segment (left on disk for the next start or another writer)."""
        segment = self.seal()
        if segment is not None:
            self.release(segment)

    def _create_segment(self) -> Segment:
        # Lock under a temporary name, then rename: an adopter never sees it unlocked.
        name = f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}{SEGMENT_SUFFIX}"
        temporary = self.directory / f".{name}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(temporary, self.directory / name)
        self._owned.add(name)
        return Segment(self.directory / name, fd)

    @staticmethod
    def _try_lock(path: Path) -> Segment | None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # Someone may have flushed and deleted it between our open and our lock.
            if os.fstat(fd).st_ino != path.stat().st_ino:
                raise FileNotFoundError(path)
        except (BlockingIOError, FileNotFoundError):
            os.close(fd)
            return None
        return Segment(path, fd, adopted=True)
