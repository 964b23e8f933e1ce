"""Reading token usage from replica responses without re-encoding them.

Streams pass through as raw SSE bytes. :class:`StreamMeter` splits them at event
boundaries only to (a) remember the last event carrying usage (the gateway asks the replica
for usage on every chunk) and parse that one event at the end, (b) remove the usage the
client did not ask for, and (c) count content-bearing events, the fallback count for a
replica that sends no usage at all. Every other byte is forwarded as received, but for one
rename: a vLLM replica's thinking (``reasoning``) becomes ``reasoning_content``, the name
aiforge's own replicas use (:func:`with_reasoning_content`).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

import orjson

# An event that carries generated text: a non-empty content/reasoning/text/arguments string.
_CONTENT = re.compile(rb'"(?:content|reasoning_content|reasoning|text|arguments)":\s*"(?!")')
_REASONING_KEY = b'"reasoning":'
_REASONING_CONTENT_KEY = b'"reasoning_content":'
_USAGE_KEY = b'"usage":'
_FINAL_USAGE = re.compile(rb'"choices":\s*\[\]')
_USAGE_OBJECT = rb'"usage":\s*\{(?:[^{}]|\{[^{}]*\})*\}'
_USAGE_MEMBER = re.compile(rb",\s*" + _USAGE_OBJECT + rb"|" + _USAGE_OBJECT + rb"\s*,?")
_DATA_PREFIX = b"data:"
_COMMA = ord(",")


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


def with_reasoning_content(data: bytes) -> bytes:
    """JSON bytes (a body, or whole SSE events) with vLLM's ``"reasoning":`` key renamed to
    ``"reasoning_content":``.

    In JSON text an unescaped ``"reasoning":`` can only be an object key (a quote inside a
    string is escaped), so a byte replace is exact. Bytes that already carry
    ``reasoning_content`` (a vLLM sending both names for compatibility) stay as they are, so
    no object gets the key twice.
    """
    if _REASONING_KEY not in data or _REASONING_CONTENT_KEY in data:
        return data
    return data.replace(_REASONING_KEY, _REASONING_CONTENT_KEY)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


class StreamMeter:
    """Watches one SSE stream on its way to the client.

    The gateway asked the replica for usage on every chunk (see :mod:`aiforge.gateway.request`);
    the meter remembers the bytes of the *last* event carrying usage that went to the client
    and parses it only at the end (:attr:`usage`), so a stream cut at any point is metered
    with exactly the tokens the client was sent. What the client did not ask for is removed
    on the way: the ``usage`` member of ordinary chunks (without ``continuous_usage_stats``)
    and the final usage-only chunk (without ``include_usage``). Events the client asked for
    in full pass through untouched.

    :meth:`feed` takes raw upstream bytes and returns the bytes to forward (complete events
    only; a partial event waits for its end). :meth:`flush` returns what is left at the end.
    With ``rename_reasoning`` (a vLLM replica) every event goes through
    :func:`with_reasoning_content` first.
    """

    def __init__(
        self,
        *,
        client_usage: bool,
        client_continuous_usage: bool = False,
        rename_reasoning: bool = False,
    ) -> None:
        self.client_usage = client_usage
        self.rename_reasoning = rename_reasoning
        self.client_continuous_usage = client_continuous_usage and client_usage
        self.content_events = 0
        """Content-bearing events forwarded before any usage arrived (a replica that sends
        no usage: the fallback count)."""
        self.first_content_at: float | None = None
        """``time.perf_counter()`` when the first generated text went to the client."""
        self._last_usage_event: bytes | None = None
        self._pending = b""
        self._separator: bytes | None = None

    @property
    def usage(self) -> TokenUsage | None:
        """The usage in the last usage-bearing event forwarded (None when there was none)."""
        event = self._last_usage_event
        if event is None:
            return None
        payload = event.strip()
        if payload.startswith(_DATA_PREFIX):
            payload = payload[len(_DATA_PREFIX) :]
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return None
        return usage_from_mapping(data.get("usage")) if isinstance(data, dict) else None

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
        if self.rename_reasoning:
            events = with_reasoning_content(events)
        if self.first_content_at is None or self._last_usage_event is None:
            self._count_content(events)
        if _USAGE_KEY not in events:
            return events
        if self.client_continuous_usage:
            self._remember_last_usage(events)
            return events
        return self._filter_usage(events)

    def _count_content(self, events: bytes) -> None:
        found = len(_CONTENT.findall(events))
        if found:
            self.content_events += found
            if self.first_content_at is None:
                self.first_content_at = time.perf_counter()

    def _remember_last_usage(self, events: bytes) -> None:
        separator = self._separator or b"\n\n"
        at = events.rfind(_USAGE_KEY)
        start = events.rfind(separator, 0, at)
        end = events.find(separator, at)
        start = 0 if start < 0 else start + len(separator)
        self._last_usage_event = events[start:] if end < 0 else events[start:end]

    def _filter_usage(self, events: bytes) -> bytes:
        separator = self._separator or b"\n\n"
        kept: list[bytes] = []
        for event in events.split(separator):
            if not event:
                continue
            if _USAGE_KEY in event:
                self._last_usage_event = event
                if _FINAL_USAGE.search(event) is not None:
                    if not self.client_usage:
                        continue  # the client did not ask for the usage chunk
                else:
                    event = without_usage_member(event)
            kept.append(event + separator)
        return b"".join(kept)


def without_usage_member(event: bytes) -> bytes:
    """The event with its ``"usage": {...}`` member removed, bytes otherwise unchanged.

    A usage object is flat but for ``*_tokens_details`` objects of numbers, so a regex with
    one level of nesting finds it; anything deeper falls back to a JSON re-encode.
    """
    # The leftmost match starts at the first usage key, or at the comma (and blanks) right
    # before it: searching from there finds what a search from the start would, without
    # trying the pattern at every byte of the event before it.
    start = event.find(_USAGE_KEY)
    if start >= 0:
        start = len(event[:start].rstrip())
        if start and event[start - 1] == _COMMA:
            start -= 1
        match = _USAGE_MEMBER.search(event, start)
        if match is not None:
            return event[: match.start()] + event[match.end() :]
    head, payload = b"", event.strip()
    if payload.startswith(_DATA_PREFIX):
        head, payload = b"data: ", payload[len(_DATA_PREFIX) :]
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return event
    if not isinstance(data, dict):
        return event
    data.pop("usage", None)
    return head + orjson.dumps(data)
