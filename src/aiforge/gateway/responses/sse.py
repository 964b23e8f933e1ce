"""Server-sent events both ways: chat chunks read, Responses events written. Pure."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

DONE = "[DONE]"


class SseReader:
    """Splits a byte stream into the ``data`` of its events (``[DONE]`` included), however
    the bytes are cut. Comments and other fields are skipped."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[str]:
        self._buffer += chunk.replace(b"\r\n", b"\n")
        *events, self._buffer = self._buffer.split(b"\n\n")
        return [data for data in map(_data_of, events) if data is not None]

    def flush(self) -> list[str]:
        """The data of a last event the stream did not end with a blank line."""
        rest, self._buffer = self._buffer, b""
        data = _data_of(rest)
        return [] if data is None else [data]


def _data_of(event: bytes) -> str | None:
    lines = [
        line[5:].removeprefix(b" ") for line in event.split(b"\n") if line.startswith(b"data:")
    ]
    if not lines:
        return None
    return b"\n".join(lines).decode("utf-8", errors="replace")


def encode_events(events: Iterable[dict[str, Any]]) -> bytes:
    """Responses events as SSE, each named by its ``type`` (as OpenAI sends them)."""
    return b"".join(
        b"event: " + str(event["type"]).encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"
        for event in events
    )
