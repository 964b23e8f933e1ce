"""Qwen's tool calls: ``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>``.

One streaming parser serves both streamed and whole responses: streamed, its deltas go
out as they come (OpenAI's shape: a call's first delta carries ``index``, ``id``, ``type``
and ``function.name``, later ones ``function.arguments`` fragments); whole, they are
concatenated.

Output cut off inside a call (``max_tokens``) ends as OpenAI ends it, with finish_reason
``length``: the call is kept with its arguments as far as the model wrote them (streamed,
they have gone out already), or dropped when its name is not whole yet. Markup never
becomes content, and nothing the model did not write is added.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from aiforge.engines.server.markers import split_at_marker

TOOL_CALL_START = "<tool_call>"
TOOL_CALL_END = "</tool_call>"

# The call's opening up to its arguments, when the model writes "name" first (Qwen does).
_HEADER = re.compile(r'^\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:\s*(?=\S)')
# What may close the call object after the arguments: held back while streaming.
_CLOSING = re.compile(r"\s*(?:\}\s*)?$")
_FINAL_CLOSING = re.compile(r"\s*\}\s*$")
_DECODER = json.JSONDecoder()


def new_tool_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


@dataclass(slots=True)
class ToolCallFragment:
    """A piece of one tool call, in OpenAI's streamed delta shape."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(slots=True)
class ToolParseDelta:
    content: str = ""
    calls: list[ToolCallFragment] = field(default_factory=list)


@dataclass(slots=True)
class _OpenCall:
    raw: str = ""
    header_end: int | None = None
    """Where the arguments start in ``raw``, once the name has been sent."""
    sent_arguments: int = 0


class ToolCallParser:
    """Splits streamed content into plain text and tool-call fragments."""

    def __init__(self, new_id: Callable[[], str] = new_tool_call_id) -> None:
        self._new_id = new_id
        self._held = ""
        self._open: _OpenCall | None = None
        self._pending_space = ""
        self.calls_made = 0

    def push(self, text: str) -> ToolParseDelta:
        out = ToolParseDelta()
        buffer = self._held + text
        self._held = ""
        while buffer:
            buffer = self._inside(buffer, out) if self._open else self._outside(buffer, out)
        return out

    def flush(self) -> ToolParseDelta:
        """End of output. A call left open (cut off by ``max_tokens``, or the model stopped
        inside it) keeps what the model wrote of it: its name and its arguments as far as
        they go. One cut off before its name is whole is dropped: markup is never content,
        and no closing tag is made up."""
        out = ToolParseDelta()
        if self._open is not None:
            self._close_call(out, terminated=False)
            self._pending_space = ""
        elif self._held:
            self._emit_text(self._held, out)
            self._held = ""
        if self.calls_made == 0 and self._pending_space:
            out.content += self._pending_space
        self._pending_space = ""
        return out

    def _outside(self, buffer: str, out: ToolParseDelta) -> str:
        before, after, held = split_at_marker(buffer, TOOL_CALL_START)
        self._emit_text(before, out)
        if after is None:
            self._held = held
            return ""
        self._open = _OpenCall()
        return after

    def _emit_text(self, text: str, out: ToolParseDelta) -> None:
        # Whitespace between and after calls is not content; it is released only
        # when more text follows it.
        body = text.rstrip()
        if body:
            out.content += self._pending_space + body
            self._pending_space = ""
        self._pending_space += text[len(body) :]

    def _inside(self, buffer: str, out: ToolParseDelta) -> str:
        call = self._open
        assert call is not None
        before, after, held = split_at_marker(buffer, TOOL_CALL_END)
        call.raw += before
        if after is None:
            self._held = held
            self._stream_arguments(call, out)
            return ""
        self._close_call(out, terminated=True)
        self._pending_space = ""
        return after

    def _stream_arguments(self, call: _OpenCall, out: ToolParseDelta) -> None:
        if call.header_end is None:
            match = _HEADER.match(call.raw)
            if match is None:
                return
            name = json.loads(f'"{match.group(1)}"')
            call.header_end = match.end()
            out.calls.append(ToolCallFragment(self.calls_made, self._new_id(), name))
        arguments = call.raw[call.header_end :]
        ready = arguments[: _CLOSING.search(arguments).start()]  # type: ignore[union-attr]
        self._send_arguments(call, ready, out)

    def _send_arguments(self, call: _OpenCall, arguments: str, out: ToolParseDelta) -> None:
        if len(arguments) <= call.sent_arguments:
            return
        fragment = arguments[call.sent_arguments :]
        call.sent_arguments = len(arguments)
        if out.calls and out.calls[-1].index == self.calls_made:
            out.calls[-1].arguments += fragment
        else:
            out.calls.append(ToolCallFragment(self.calls_made, arguments=fragment))

    def _close_call(self, out: ToolParseDelta, *, terminated: bool) -> None:
        """Finish the open call; ``terminated``: the model wrote ``</tool_call>``."""
        call = self._open
        assert call is not None
        self._open = None
        held, self._held = self._held, ""
        if call.header_end is None:
            self._stream_arguments(call, out)
        if call.header_end is not None:
            arguments = call.raw[call.header_end :] + held
            self._send_arguments(call, _final_arguments(arguments, terminated=terminated), out)
            self.calls_made += 1
            return
        parsed = _parse_call(call.raw)
        if parsed is not None:
            name, arguments_json = parsed
            out.calls.append(
                ToolCallFragment(self.calls_made, self._new_id(), name, arguments_json)
            )
            self.calls_made += 1
        elif terminated:
            # A whole block that is not a call is the model's text, written as it was.
            self._emit_text(f"{TOOL_CALL_START}{call.raw}{TOOL_CALL_END}", out)


def _final_arguments(arguments: str, *, terminated: bool) -> str:
    """A call's arguments from the text after its header: the JSON value when there is
    one; else, for a call cut off, all that was written; else (a malformed call) the text
    less the call object's closing brace."""
    try:
        _, end = _DECODER.raw_decode(arguments)
    except json.JSONDecodeError:
        if not terminated:
            return arguments
        closing = _FINAL_CLOSING.search(arguments)
        return arguments[: closing.start() if closing else None]
    return arguments[:end]


def _parse_call(raw: str) -> tuple[str, str] | None:
    """``(name, arguments as JSON)`` of a whole call body, or None when it is not one."""
    try:
        body = json.loads(raw)
    except json.JSONDecodeError:
        return None
    if not isinstance(body, dict) or not isinstance(body.get("name"), str):
        return None
    arguments = body.get("arguments", body.get("parameters", {}))
    if isinstance(arguments, str):
        return body["name"], arguments
    return body["name"], json.dumps(arguments, ensure_ascii=False)
