"""A Responses request as a chat completion request: the body the replicas answer.

Pure: :func:`chat_body` maps each Responses parameter onto its chat completions twin —

=====================================  ================================================
Responses                              chat completions
=====================================  ================================================
``instructions``                       a first ``system`` message
conversation + ``input`` items         ``messages`` (:func:`~.items.chat_messages`)
``tools`` (``function``)               ``tools`` (``strict`` defaults to true, as OpenAI's
                                       Responses API does)
``tool_choice`` ``{type, name}``       ``{"type": "function", "function": {"name"}}``
``text.format``                        ``response_format``
``reasoning.effort``                   ``reasoning_effort`` (``xhigh``/``max`` → ``high``)
``max_output_tokens``                  ``max_completion_tokens``
``temperature``, ``top_p``, ``user``   the same
``stream``                             ``stream`` with ``stream_options.include_usage``
=====================================  ================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiforge.gateway.responses.items import Item, chat_messages
from aiforge.protocol.openai.responses import (
    CreateResponseRequest,
    TextFormatJsonObject,
    TextFormatJsonSchema,
    ToolChoiceFunction,
)

CHAT_EFFORTS = frozenset({"none", "minimal", "low", "medium", "high"})
"""The ``reasoning_effort`` values chat completions take; stronger ones map to ``high``."""


def chat_body(request: CreateResponseRequest, items: Sequence[Item]) -> dict[str, Any]:
    """The chat completion request answering ``request`` over ``items`` (the stored
    conversation it continues, then its own input, in stored form)."""
    body: dict[str, Any] = {
        "model": request.model,
        "messages": chat_messages(items, request.instructions),
        "stream": request.stream,
    }
    if request.stream:
        body["stream_options"] = {"include_usage": True}
    optional = {
        "max_completion_tokens": request.max_output_tokens,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "user": request.user,
        "reasoning_effort": chat_effort(request),
        "response_format": _response_format(request),
    }
    body.update({name: value for name, value in optional.items() if value is not None})
    if request.tools:
        body["tools"] = [_chat_tool(tool.model_dump()) for tool in request.tools]
        body["parallel_tool_calls"] = request.parallel_tool_calls
    if request.tool_choice is not None and (request.tools or request.tool_choice == "none"):
        body["tool_choice"] = _chat_tool_choice(request)
    return body


def chat_effort(request: CreateResponseRequest) -> str | None:
    effort = request.reasoning.effort if request.reasoning else None
    if effort is None:
        return None
    return effort if effort in CHAT_EFFORTS else "high"


def _chat_tool(tool: dict[str, Any]) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool["name"]}
    if tool.get("description") is not None:
        function["description"] = tool["description"]
    if tool.get("parameters") is not None:
        function["parameters"] = tool["parameters"]
    function["strict"] = True if tool.get("strict") is None else tool["strict"]
    return {"type": "function", "function": function}


def _chat_tool_choice(request: CreateResponseRequest) -> str | dict[str, Any]:
    choice = request.tool_choice
    if isinstance(choice, ToolChoiceFunction):
        return {"type": "function", "function": {"name": choice.name}}
    assert choice is not None
    return choice


def _response_format(request: CreateResponseRequest) -> dict[str, Any] | None:
    text_format = request.text.format if request.text else None
    if isinstance(text_format, TextFormatJsonObject):
        return {"type": "json_object"}
    if isinstance(text_format, TextFormatJsonSchema):
        spec: dict[str, Any] = {"name": text_format.name, "schema": text_format.schema_}
        if text_format.description is not None:
            spec["description"] = text_format.description
        if text_format.strict is not None:
            spec["strict"] = text_format.strict
        return {"type": "json_schema", "json_schema": spec}
    return None
