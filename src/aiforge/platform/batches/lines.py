"""Reading a batch's input file line by line, with bounded memory.

A request is a non-blank line; its *index* counts requests from 0 (blank lines are not
requests) and its *number* is its line in the file from 1 (what errors report). A line
longer than the limit is reported as too long without being held in memory. Blocking I/O:
callers run these off the event loop.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

_READ_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class InputLine:
    index: int
    """The request's index among the file's requests (0-based)."""
    number: int
    """Its line number in the file (1-based)."""
    raw: bytes | None
    """The line without its newline; None when it is longer than the limit."""


def _physical_lines(handle: BinaryIO, max_line_bytes: int) -> Iterator[bytes | None]:
    """Each line of ``handle`` without its newline (None for one over ``max_line_bytes``)."""
    while True:
        line = handle.readline(max_line_bytes + 2)
        if not line:
            return
        if line.endswith(b"\n") or len(line) <= max_line_bytes:
            yield line.rstrip(b"\r\n")
            continue
        while line and not line.endswith(b"\n"):  # skip the rest of the overlong line
            line = handle.readline(_READ_BYTES)
        yield None


def read_requests(path: Path, *, max_line_bytes: int) -> Iterator[InputLine]:
    """Every request line of the file at ``path``, in order."""
    index = 0
    with path.open("rb") as handle:
        for number, raw in enumerate(_physical_lines(handle, max_line_bytes), start=1):
            if raw is not None and not raw.strip():
                continue
            yield InputLine(index=index, number=number, raw=raw)
            index += 1
