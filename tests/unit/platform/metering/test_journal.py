"""The journal: append, seal, torn tails, and adopting a dead writer's segments."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from aiforge.platform.metering.journal import Journal, journal_line, read_segment


def test_append_is_readable_before_sealing(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.append({"request_id": "r1", "prompt_tokens": 3})
    journal.append({"request_id": "r2"})
    (segment_path,) = tmp_path.glob("*.jsonl")
    assert [r["request_id"] for r in read_segment(segment_path)] == ["r1", "r2"]
    segment = journal.seal()
    assert segment is not None
    assert segment.records == 2
    assert journal.seal() is None
    journal.discard(segment)
    assert not list(tmp_path.glob("*.jsonl"))


def test_a_seal_carries_lines_into_the_next_segment(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    assert journal.seal(carry=lambda: pytest.fail("nothing sealed, nothing to carry")) is None
    journal.append({"request_id": "r1"})
    opened = [journal_line({"opened": {"request_id": f"r{i}"}}) for i in (2, 3)]
    sealed = journal.seal(carry=lambda: opened)
    assert sealed is not None
    assert read_segment(sealed.path) == [{"request_id": "r1"}]
    (active,) = set(tmp_path.glob("*.jsonl")) - {sealed.path}
    journal.append({"request_id": "r2"})
    assert read_segment(active) == [
        {"opened": {"request_id": "r2"}},
        {"opened": {"request_id": "r3"}},
        {"request_id": "r2"},
    ]
    assert list(Journal(tmp_path).adopt_orphans()) == []  # the new segment is locked too
    carried = journal.seal(carry=list)  # nothing left to carry: no new segment
    assert carried is not None
    assert carried.path == active
    assert carried.records == 3
    for segment in (sealed, carried):
        journal.discard(segment)
    assert not list(tmp_path.glob("*.jsonl"))


def test_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "0001-1-abcd.jsonl"
    path.write_bytes(b'{"request_id": "r1"}\n{"request_id": "r2"}\n{"request_id": "r')
    assert [r["request_id"] for r in read_segment(path)] == ["r1", "r2"]


def test_a_live_writers_segments_are_not_adopted(tmp_path: Path) -> None:
    writer, other = Journal(tmp_path), Journal(tmp_path)
    writer.append({"request_id": "r1"})
    assert list(other.adopt_orphans()) == []
    sealed = writer.seal()  # sealed but not yet flushed: still owned
    assert list(other.adopt_orphans()) == []
    assert sealed is not None
    writer.release(sealed)  # e.g. the database refused it at shutdown
    (adopted,) = other.adopt_orphans()
    assert read_segment(adopted.path) == [{"request_id": "r1"}]
    other.discard(adopted)


_WRITER = """
import sys, time
from pathlib import Path
from aiforge.platform.metering.journal import Journal
journal = Journal(Path(sys.argv[1]))
for i in range(100):
    journal.append({"request_id": f"r{i}"})
print("written", flush=True)
time.sleep(60)
"""


def test_a_killed_writers_records_survive_and_are_adopted(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "written"
        survivor = Journal(tmp_path)
        assert list(survivor.adopt_orphans()) == []  # the writer is alive
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        (adopted,) = survivor.adopt_orphans()
        assert [r["request_id"] for r in read_segment(adopted.path)] == [
            f"r{i}" for i in range(100)
        ]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()
