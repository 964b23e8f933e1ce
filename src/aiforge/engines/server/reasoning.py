"""Qwen3 thinking: split ``<think>…</think>`` out of the output as ``reasoning_content``."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from aiforge.engines.server.markers import split_at_marker

THINK_START = "<think>"
THINK_END = "</think>"


class _Phase(enum.Enum):
    UNDECIDED = "undecided"
    """Nothing but whitespace seen yet: the output may still open with ``<think>``."""
    REASONING = "reasoning"
    CONTENT = "content"


@dataclass(slots=True)
class ReasoningDelta:
    reasoning: str = ""
    content: str = ""


def prompt_thinking_state(prompt_text: str) -> str:
    """Where the rendered prompt leaves the model: ``"reasoning"`` when it ends inside an
    open ``<think>`` block (Qwen3-2507 thinking templates), ``"content"`` when it ends with a
    closed, empty think block (``enable_thinking=False``), else ``"undecided"``."""
    tail = prompt_text.rstrip()
    if tail.endswith(THINK_START):
        return "reasoning"
    if tail.endswith(THINK_END):
        return "content"
    return "undecided"


class ReasoningParser:
    """Streaming splitter of generated text into reasoning and content.

    Whitespace right after ``<think>`` / ``</think>`` and right before ``</think>`` is
    dropped (Qwen writes ``<think>\\n…\\n</think>\\n\\n``). Marker fragments are held back
    until the next delta settles them.
    """

    def __init__(self, start: str = "undecided") -> None:
        self._phase = _Phase(start)
        self._held = ""
        self._section_start = True

    def push(self, text: str) -> ReasoningDelta:
        out = ReasoningDelta()
        buffer = self._held + text
        self._held = ""
        while buffer:
            if self._phase is _Phase.UNDECIDED:
                buffer = self._decide(buffer)
            elif self._phase is _Phase.REASONING:
                buffer = self._reason(buffer, out)
            else:
                self._emit_content(buffer, out)
                buffer = ""
        return out

    def flush(self) -> ReasoningDelta:
        """End of output: whatever was held back is released in the current phase."""
        held, self._held = self._held, ""
        out = ReasoningDelta()
        if self._phase is _Phase.REASONING:
            out.reasoning = held.rstrip() if held.strip() else ""
        elif held.strip():
            out.content = held.lstrip() if self._section_start else held
        return out

    def _decide(self, buffer: str) -> str:
        stripped = buffer.lstrip()
        if stripped.startswith(THINK_START):
            self._phase = _Phase.REASONING
            self._section_start = True
            return stripped[len(THINK_START) :]
        if THINK_START.startswith(stripped):
            self._held = buffer
            return ""
        self._phase = _Phase.CONTENT
        return buffer

    def _reason(self, buffer: str, out: ReasoningDelta) -> str:
        before, after, held = split_at_marker(buffer, THINK_END)
        if self._section_start:
            before = before.lstrip()
            self._section_start = not before and after is None
        if after is not None:
            out.reasoning += before.rstrip()
            self._phase = _Phase.CONTENT
            self._section_start = True
            return after
        # Trailing whitespace may precede </think>: release it only once text follows.
        body = before.rstrip()
        out.reasoning += body
        self._held = before[len(body) :] + held
        return ""

    def _emit_content(self, buffer: str, out: ReasoningDelta) -> None:
        if self._section_start:
            buffer = buffer.lstrip()
            if not buffer:
                return
            self._section_start = False
        out.content += buffer
