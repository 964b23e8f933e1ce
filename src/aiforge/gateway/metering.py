"""Reading token usage from replica responses without re-encoding them.

Streams pass through as raw SSE bytes. :class:`StreamMeter` splits them at event
boundaries only to (a) find the usage chunk the gateway asked for, parse that one event,
and drop it when the client did not ask for it, and (b) count content-bearing events, the
fallback count when a stream ends without usage (client cancelled, replica died). Every
other byte is forwarded as received.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

import orjson

# An event that carries generated text: a non-empty content/reasoning/text/arguments string.
_CONTENT = re.compile(rb'"(?:content|reasoning_content|text|arguments)":\s*"(?!")')
_USAGE = re.compile(rb'"usage":\s*\{')
_DATA_PREFIX = b"data:"


@dataclass(frozen=True, slots=True)
class TokenUsage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def usage_from_mapping(usage: Any) -> TokenUsage | None:
    """Parse OpenAI's ``usage`` object (None when absent or malformed)."""
    if not isinstance(usage, dict):
        return None
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else 0
    return TokenUsage(
        prompt_tokens=_int(usage.get("prompt_tokens")),
        completion_tokens=_int(usage.get("completion_tokens")),
        cached_tokens=_int(cached),
    )


def usage_from_body(body: bytes) -> TokenUsage | None:
    """Usage of a non-streamed JSON response body."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return usage_from_mapping(data.get("usage")) if isinstance(data, dict) else None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


class StreamMeter:
    """Watches one SSE stream on its way to the client.

    :meth:`feed` takes raw upstream bytes and returns the bytes to forward (complete events
    only; a partial event waits for its end). :meth:`flush` returns what is left at the end.
    """

    def __init__(self, *, strip_usage_chunk: bool) -> None:
        self.strip_usage_chunk = strip_usage_chunk
        self.usage: TokenUsage | None = None
        self.content_events = 0
        self.first_content_at: float | None = None
        """``time.perf_counter()`` when the first generated text went to the client."""
        self._pending = b""
        self._separator: bytes | None = None

    def feed(self, chunk: bytes) -> bytes:
        buffer = self._pending + chunk if self._pending else chunk
        if self._separator is None:
            newline = buffer.find(b"\n")
            if newline < 0:
                self._pending = buffer
                return b""
            # SSE allows CRLF line ends (sse-starlette uses them); the first line end decides.
            self._separator = b"\r\n\r\n" if buffer[newline - 1 : newline] == b"\r" else b"\n\n"
        end = buffer.rfind(self._separator)
        if end < 0:
            self._pending = buffer
            return b""
        cut = end + len(self._separator)
        complete, self._pending = buffer[:cut], buffer[cut:]
        return self._inspect(complete)

    def flush(self) -> bytes:
        rest, self._pending = self._pending, b""
        return self._inspect(rest) if rest else b""

    def _inspect(self, events: bytes) -> bytes:
        found = len(_CONTENT.findall(events))
        if found:
            self.content_events += found
            if self.first_content_at is None:
                self.first_content_at = time.perf_counter()
        if _USAGE.search(events) is None:
            return events
        return self._take_usage(events)

    def _take_usage(self, events: bytes) -> bytes:
        separator = self._separator or b"\n\n"
        kept: list[bytes] = []
        for event in events.split(separator):
            if not event:
                continue
            if _USAGE.search(event) is not None and self._read_usage(event):
                continue
            kept.append(event + separator)
        return b"".join(kept)

    def _read_usage(self, event: bytes) -> bool:
        """Record the event's usage; True when the event should be dropped for the client."""
        payload = event.strip()
        if payload.startswith(_DATA_PREFIX):
            payload = payload[len(_DATA_PREFIX) :]
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return False
        if not isinstance(data, dict):
            return False
        usage = usage_from_mapping(data.get("usage"))
        if usage is not None:
            self.usage = usage
        return self.strip_usage_chunk and data.get("choices") == []
