"""Load generation against a gateway, for end-to-end tests and benchmarks.

* :func:`run_bounded` runs one coroutine per item with at most ``concurrency`` in flight.
* :class:`StreamTally` reads an OpenAI SSE stream the way a client sees it, counting what
  it received: content-bearing chunks, tokens (through ``logprobs``), the usage chunk.
* :func:`read_stream` drives an ``httpx`` streamed response into a tally, optionally
  hanging up after the first content chunk (a client that cancels mid-stream).

Everything here measures the *client's* view, so a test can compare it with what the
gateway metered.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

Item = TypeVar("Item")
Result = TypeVar("Result")

DONE = "[DONE]"


async def run_bounded(
    items: Iterable[Item],
    worker: Callable[[Item], Awaitable[Result]],
    *,
    concurrency: int,
) -> list[Result]:
    """``worker(item)`` for every item, at most ``concurrency`` at a time; results in order.

    The first exception cancels nothing already running but is raised after all finish.
    """
    gate = asyncio.Semaphore(concurrency)

    async def one(item: Item) -> Result:
        async with gate:
            return await worker(item)

    return list(await asyncio.gather(*(one(item) for item in items)))


@dataclass
class StreamTally:
    """What a client received from one ``chat.completion.chunk`` / ``text_completion`` stream."""

    events: int = 0
    content_chunks: int = 0
    """Chunks carrying non-empty generated text (content, reasoning, text or arguments)."""
    logprob_tokens: int = 0
    """Tokens listed in ``logprobs`` (one per generated token when the request asked for it)."""
    usage: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    done: bool = False
    texts: list[str] = field(default_factory=list)

    def feed_line(self, line: str) -> None:
        """Take one SSE line (``data: ...``; other lines are ignored)."""
        if not line.startswith("data:"):
            return
        payload = line[len("data:") :].strip()
        if payload == DONE:
            self.done = True
            return
        self.events += 1
        self.feed_chunk(json.loads(payload))

    def feed_chunk(self, chunk: dict[str, Any]) -> None:
        if isinstance(chunk.get("error"), dict):
            self.error = chunk["error"]
            return
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            text = _choice_text(choice)
            if text:
                self.content_chunks += 1
                self.texts.append(text)
            self.logprob_tokens += _logprob_count(choice.get("logprobs"))


def _choice_text(choice: dict[str, Any]) -> str:
    if isinstance(choice.get("text"), str):
        return str(choice["text"])
    delta = choice.get("delta") or {}
    parts = [delta.get("content"), delta.get("reasoning_content")]
    for call in delta.get("tool_calls") or ():
        parts.append((call.get("function") or {}).get("arguments"))
    return "".join(p for p in parts if isinstance(p, str))


def _logprob_count(logprobs: Any) -> int:
    if not isinstance(logprobs, dict):
        return 0
    content = logprobs.get("content")  # chat
    if isinstance(content, list):
        return len(content)
    tokens = logprobs.get("tokens")  # completions
    return len(tokens) if isinstance(tokens, list) else 0


async def read_stream(
    response: httpx.Response, *, hang_up_after_content: bool = False
) -> tuple[StreamTally, bool]:
    """Read an SSE response into a :class:`StreamTally`.

    With ``hang_up_after_content`` the client stops reading after the first content chunk
    (the caller then closes the response). Returns ``(tally, hung_up)``; ``hung_up`` is False
    when the stream ended before any content arrived.
    """
    tally = StreamTally()
    async for line in response.aiter_lines():
        tally.feed_line(line)
        if hang_up_after_content and tally.content_chunks and not tally.done:
            return tally, True
    return tally, False
