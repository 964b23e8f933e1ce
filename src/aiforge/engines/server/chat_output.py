"""One chat sequence's text → reasoning, content and tool-call deltas."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiforge.engines.server.reasoning import ReasoningParser
from aiforge.engines.server.tool_calls import ToolCallFragment, ToolCallParser
from aiforge.protocol.openai.chat import (
    AssistantMessage,
    DeltaMessage,
    FunctionCallDelta,
    ResponseFunctionCall,
    ResponseToolCall,
    ToolCallDelta,
)


@dataclass(slots=True)
class ChatParts:
    reasoning: str = ""
    content: str = ""
    calls: list[ToolCallFragment] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.reasoning or self.content or self.calls)

    def extend(self, other: ChatParts) -> None:
        self.reasoning += other.reasoning
        self.content += other.content
        self.calls.extend(other.calls)

    def delta(self) -> DeltaMessage:
        delta = DeltaMessage()
        if self.reasoning:
            delta.reasoning_content = self.reasoning
        if self.content:
            delta.content = self.content
        if self.calls:
            delta.tool_calls = [_call_delta(fragment) for fragment in self.calls]
        return delta


def _call_delta(fragment: ToolCallFragment) -> ToolCallDelta:
    if fragment.id is not None:
        return ToolCallDelta(
            index=fragment.index,
            id=fragment.id,
            type="function",
            function=FunctionCallDelta(name=fragment.name, arguments=fragment.arguments),
        )
    return ToolCallDelta(
        index=fragment.index, function=FunctionCallDelta(arguments=fragment.arguments)
    )


class ChatSequenceOutput:
    """Reasoning parser, then (when tools are offered) the tool-call parser on the content."""

    def __init__(self, *, reasoning_start: str, parse_tools: bool) -> None:
        self._reasoning = ReasoningParser(reasoning_start)
        self._tools = ToolCallParser() if parse_tools else None

    @property
    def called_tools(self) -> bool:
        return self._tools is not None and self._tools.calls_made > 0

    def push(self, text: str) -> ChatParts:
        split = self._reasoning.push(text)
        return self._route(split.reasoning, split.content, final=False)

    def flush(self) -> ChatParts:
        split = self._reasoning.flush()
        return self._route(split.reasoning, split.content, final=True)

    def _route(self, reasoning: str, content: str, *, final: bool) -> ChatParts:
        parts = ChatParts(reasoning=reasoning)
        if self._tools is None:
            parts.content = content
            return parts
        parsed = self._tools.push(content) if content else None
        if parsed is not None:
            parts.content, parts.calls = parsed.content, parsed.calls
        if final:
            tail = self._tools.flush()
            parts.content += tail.content
            parts.calls.extend(tail.calls)
        return parts


class MessageBuilder:
    """Accumulates a sequence's parts into the non-streamed assistant message."""

    def __init__(self) -> None:
        self.parts = ChatParts()

    def add(self, parts: ChatParts) -> None:
        self.parts.extend(parts)

    def message(self) -> AssistantMessage:
        calls: dict[int, ResponseToolCall] = {}
        for fragment in self.parts.calls:
            call = calls.get(fragment.index)
            if call is None:
                calls[fragment.index] = ResponseToolCall(
                    id=fragment.id or "",
                    function=ResponseFunctionCall(
                        name=fragment.name or "", arguments=fragment.arguments
                    ),
                )
            else:
                call.function.arguments += fragment.arguments
        message = AssistantMessage(content=self.parts.content or None, refusal=None)
        if self.parts.reasoning:
            message.reasoning_content = self.parts.reasoning
        if calls:
            message.tool_calls = list(calls.values())
        elif message.content is None:
            message.content = ""
        return message
