"""Chat completion chunks in, the Responses API's stream events out: a pure state machine.

:class:`ResponseStream` is fed the chat chunks of one answer (parsed JSON, in order) and
returns, for each, the Responses events it causes, numbered by ``sequence_number``:

* :meth:`~ResponseStream.start`: ``response.created``, ``response.in_progress``;
* thinking (``delta.reasoning_content``): a ``reasoning`` output item —
  ``output_item.added``, ``content_part.added`` (``reasoning_text``),
  ``reasoning_text.delta``…, and when something else begins, ``reasoning_text.done``,
  ``content_part.done``, ``output_item.done``;
* text (``delta.content``): a ``message`` item likewise, with ``output_text`` deltas;
* tool calls (``delta.tool_calls``): one ``function_call`` item per call —
  ``output_item.added``, ``function_call_arguments.delta``…, and at the end
  ``function_call_arguments.done``, ``output_item.done``;
* :meth:`~ResponseStream.finish`: every open item closed, then ``response.completed`` — or
  ``response.incomplete`` (``incomplete_details.reason``: ``max_output_tokens`` when the
  answer stopped at its token limit);
* :meth:`~ResponseStream.fail`: an ``error`` event, then ``response.failed``.

A non-streamed chat answer is the same machine fed one chunk (:func:`response_from_answer`),
so streamed and whole answers make the same Response.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiforge.gateway.responses.items import IdFactory, Item, new_item_id
from aiforge.gateway.responses.objects import ResponseFrame, response_usage

Event = dict[str, Any]
INCOMPLETE_REASONS = {"length": "max_output_tokens", "content_filter": "content_filter"}


@dataclass(slots=True)
class _TextItem:
    """An open ``reasoning`` or ``message`` output item with one text content part."""

    output_index: int
    item: Item
    text: list[str] = field(default_factory=list)

    @property
    def reasoning(self) -> bool:
        return bool(self.item["type"] == "reasoning")

    def part(self) -> Item:
        text = "".join(self.text)
        if self.reasoning:
            return {"type": "reasoning_text", "text": text}
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


@dataclass(slots=True)
class _CallItem:
    output_index: int
    item: Item
    arguments: list[str] = field(default_factory=list)


class ResponseStream:
    """The Responses events of one answer, from its chat chunks."""

    def __init__(
        self,
        frame: ResponseFrame,
        *,
        new_id: IdFactory = new_item_id,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.frame = frame
        self._new_id = new_id
        self._clock = clock
        self._sequence = 0
        self.output: list[Item] = []
        self._text: _TextItem | None = None
        self._calls: dict[int, _CallItem] = {}
        self._open_calls: list[_CallItem] = []
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self.final: dict[str, Any] | None = None
        """The terminal Response, once :meth:`finish` or :meth:`fail` ran."""

    # -- the public steps ----------------------------------------------------------
    def start(self) -> list[Event]:
        snapshot = self.frame.response(status="in_progress", output=[])
        return [
            self._event("response.created", response=snapshot),
            self._event("response.in_progress", response=copy.deepcopy(snapshot)),
        ]

    def feed(self, chunk: Mapping[str, Any]) -> list[Event]:
        """The events of one chat chunk (``choices[0]`` only: Responses have one answer)."""
        events: list[Event] = []
        usage = response_usage(chunk.get("usage"))
        if usage is not None:
            self.usage = usage
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
            return events
        choice = choices[0]
        delta = choice.get("delta")
        if isinstance(delta, Mapping):
            events += self._delta(delta)
        if isinstance(choice.get("finish_reason"), str):
            self.finish_reason = choice["finish_reason"]
        return events

    def finish(self) -> list[Event]:
        """Close what is open and end the response (``completed`` or ``incomplete``)."""
        reason = INCOMPLETE_REASONS.get(self.finish_reason or "")
        status = "incomplete" if reason else "completed"
        events = self._close_all(item_status=status)
        now = int(self._clock())
        self.final = self.frame.response(
            status=status,
            output=copy.deepcopy(self.output),
            usage=self.usage,
            incomplete_reason=reason,
            completed_at=None if reason else now,
        )
        kind = "response.incomplete" if reason else "response.completed"
        return [*events, self._event(kind, response=copy.deepcopy(self.final))]

    def fail(self, message: str, *, code: str = "server_error") -> list[Event]:
        """End the response as failed (the upstream broke mid-answer)."""
        events = self._close_all(item_status="incomplete")
        error = {"code": code, "message": message}
        self.final = self.frame.response(
            status="failed",
            output=copy.deepcopy(self.output),
            usage=self.usage,
            error=error,
        )
        return [
            *events,
            self._event("error", code=code, message=message, param=None),
            self._event("response.failed", response=copy.deepcopy(self.final)),
        ]

    # -- deltas --------------------------------------------------------------------
    def _delta(self, delta: Mapping[str, Any]) -> list[Event]:
        events: list[Event] = []
        reasoning = delta.get("reasoning_content")
        if isinstance(reasoning, str) and reasoning:
            events += self._text_delta(reasoning, reasoning=True)
        content = delta.get("content")
        if isinstance(content, str) and content:
            events += self._text_delta(content, reasoning=False)
        calls = delta.get("tool_calls")
        if isinstance(calls, list):
            for call in calls:
                if isinstance(call, Mapping):
                    events += self._call_delta(call)
        return events

    def _text_delta(self, text: str, *, reasoning: bool) -> list[Event]:
        events: list[Event] = []
        if self._text is not None and self._text.reasoning != reasoning:
            events += self._close_text("completed")
        if self._text is None:
            events += self._open_text(reasoning=reasoning)
        assert self._text is not None
        self._text.text.append(text)
        kind = "response.reasoning_text.delta" if reasoning else "response.output_text.delta"
        extra: dict[str, Any] = {} if reasoning else {"logprobs": []}
        events.append(self._event(kind, **self._where(self._text), delta=text, **extra))
        return events

    def _open_text(self, *, reasoning: bool) -> list[Event]:
        item: Item
        if reasoning:
            item = {"id": self._new_id("rs"), "type": "reasoning", "summary": [], "content": [],
                    "status": "in_progress"}  # fmt: skip
        else:
            item = {"id": self._new_id("msg"), "type": "message", "status": "in_progress",
                    "role": "assistant", "content": []}  # fmt: skip
        opened = self._text = _TextItem(len(self.output), item)
        self.output.append(item)
        return [
            self._event("response.output_item.added", output_index=opened.output_index,
                        item=copy.deepcopy(item)),
            self._event("response.content_part.added", **self._where(opened),
                        part=opened.part()),
        ]  # fmt: skip

    def _close_text(self, status: str) -> list[Event]:
        opened, self._text = self._text, None
        if opened is None:
            return []
        part = opened.part()
        opened.item["content"] = [part]
        opened.item["status"] = status
        where = self._where(opened)
        if opened.reasoning:
            done = self._event("response.reasoning_text.done", **where, text=part["text"])
        else:
            done = self._event("response.output_text.done", **where, text=part["text"],
                               logprobs=[])  # fmt: skip
        return [
            done,
            self._event("response.content_part.done", **where, part=copy.deepcopy(part)),
            self._event("response.output_item.done", output_index=opened.output_index,
                        item=copy.deepcopy(opened.item)),
        ]  # fmt: skip

    def _call_delta(self, call: Mapping[str, Any]) -> list[Event]:
        events: list[Event] = []
        index = call.get("index", 0)
        index = index if isinstance(index, int) else 0
        function = call.get("function")
        function = function if isinstance(function, Mapping) else {}
        state = self._calls.get(index)
        if state is None:
            events += self._close_text("completed")
            state = self._open_call(index, call.get("id"), function.get("name"))
            events.append(self._event("response.output_item.added",
                                      output_index=state.output_index,
                                      item=copy.deepcopy(state.item)))  # fmt: skip
        elif isinstance(function.get("name"), str):
            state.item["name"] += function["name"]
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            state.arguments.append(arguments)
            events.append(
                self._event("response.function_call_arguments.delta",
                            item_id=state.item["id"], output_index=state.output_index,
                            delta=arguments)
            )  # fmt: skip
        return events

    def _open_call(self, index: int, call_id: Any, name: Any) -> _CallItem:
        item: Item = {
            "id": self._new_id("fc"),
            "type": "function_call",
            "status": "in_progress",
            "call_id": call_id if isinstance(call_id, str) and call_id else self._new_id("call"),
            "name": name if isinstance(name, str) else "",
            "arguments": "",
        }
        state = self._calls[index] = _CallItem(len(self.output), item)
        self.output.append(item)
        self._open_calls.append(state)
        return state

    def _close_all(self, *, item_status: str) -> list[Event]:
        events = self._close_text(item_status)
        for state in self._open_calls:
            arguments = "".join(state.arguments)
            state.item["arguments"] = arguments
            state.item["status"] = item_status
            events.append(
                self._event("response.function_call_arguments.done", item_id=state.item["id"],
                            output_index=state.output_index, name=state.item["name"],
                            arguments=arguments)
            )  # fmt: skip
            events.append(self._event("response.output_item.done",
                                      output_index=state.output_index,
                                      item=copy.deepcopy(state.item)))  # fmt: skip
        self._open_calls.clear()
        return events

    # -- helpers -------------------------------------------------------------------
    @staticmethod
    def _where(opened: _TextItem) -> dict[str, Any]:
        return {"item_id": opened.item["id"], "output_index": opened.output_index,
                "content_index": 0}  # fmt: skip

    def _event(self, kind: str, **fields: Any) -> Event:
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return event


def chunk_from_answer(answer: Mapping[str, Any]) -> dict[str, Any]:
    """A whole chat completion as one chunk (its message as the delta)."""
    choices = answer.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else {}
    message = choice.get("message") if isinstance(choice, Mapping) else None
    message = message if isinstance(message, Mapping) else {}
    delta: dict[str, Any] = {
        "reasoning_content": message.get("reasoning_content"),
        "content": message.get("content"),
    }
    calls = message.get("tool_calls")
    if isinstance(calls, list):
        delta["tool_calls"] = [
            {**call, "index": index}
            for index, call in enumerate(calls)
            if isinstance(call, Mapping)
        ]
    finish = choice.get("finish_reason") if isinstance(choice, Mapping) else None
    return {"choices": [{"delta": delta, "finish_reason": finish}], "usage": answer.get("usage")}


def response_from_answer(stream: ResponseStream, answer: Mapping[str, Any]) -> dict[str, Any]:
    """The Response for a whole chat completion ``answer`` (``stream`` fresh)."""
    stream.feed(chunk_from_answer(answer))
    stream.finish()
    assert stream.final is not None
    return stream.final
