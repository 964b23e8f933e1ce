"""The Response object: what a request fixes (:class:`ResponseFrame`) and what the answer adds.

Pure. A :class:`ResponseFrame` holds the fields every snapshot of one response shares — its
id, creation time, model and the request's settings echoed back as OpenAI does
(``instructions``, ``tools``, ``tool_choice``, ``text``, ``reasoning``, …); its
:meth:`ResponseFrame.response` adds the status, output and usage of one moment.
:func:`response_usage` turns a chat completion's usage into the Responses shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiforge.gateway.responses.items import Item
from aiforge.protocol.openai.responses import (
    CreateResponseRequest,
    TextFormatJsonObject,
    TextFormatJsonSchema,
    ToolChoiceFunction,
)


@dataclass(frozen=True, slots=True)
class ResponseFrame:
    """The fixed part of one Response."""

    id: str
    created_at: int
    request: CreateResponseRequest

    def response(
        self,
        *,
        status: str,
        output: list[Item],
        usage: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
        incomplete_reason: str | None = None,
        completed_at: int | None = None,
    ) -> dict[str, Any]:
        """The Response object with this status, output and usage."""
        request = self.request
        body: dict[str, Any] = {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": False,
            "completed_at": completed_at,
            "error": error,
            "incomplete_details": None
            if incomplete_reason is None
            else {"reason": incomplete_reason},
            "instructions": request.instructions,
            "max_output_tokens": request.max_output_tokens,
            "max_tool_calls": request.max_tool_calls,
            "model": request.model,
            "output": output,
            "parallel_tool_calls": request.parallel_tool_calls,
            "previous_response_id": request.previous_response_id,
            "reasoning": self._reasoning(),
            "store": request.store,
            "temperature": request.temperature,
            "text": {"format": self._text_format()},
            "tool_choice": self._tool_choice(),
            "tools": [self._tool(tool.model_dump()) for tool in request.tools or ()],
            "top_p": request.top_p,
            "truncation": "disabled",
            "metadata": dict(request.metadata or {}),
        }
        if usage is not None:
            body["usage"] = usage
        if request.user is not None:
            body["user"] = request.user
        return body

    def _reasoning(self) -> dict[str, Any]:
        reasoning = self.request.reasoning
        if reasoning is None:
            return {"effort": None, "summary": None}
        return {"effort": reasoning.effort, "summary": reasoning.summary}

    def _text_format(self) -> dict[str, Any]:
        text_format = self.request.text.format if self.request.text else None
        if isinstance(text_format, TextFormatJsonSchema):
            echoed: dict[str, Any] = {
                "type": "json_schema",
                "name": text_format.name,
                "schema": text_format.schema_,
                "strict": text_format.strict,
            }
            if text_format.description is not None:
                echoed["description"] = text_format.description
            return echoed
        if isinstance(text_format, TextFormatJsonObject):
            return {"type": "json_object"}
        return {"type": "text"}

    def _tool_choice(self) -> str | dict[str, Any]:
        choice = self.request.tool_choice
        if isinstance(choice, ToolChoiceFunction):
            return {"type": "function", "name": choice.name}
        return choice or "auto"

    @staticmethod
    def _tool(tool: dict[str, Any]) -> dict[str, Any]:
        echoed = {
            "type": "function",
            "name": tool["name"],
            "parameters": tool.get("parameters"),
            "strict": True if tool.get("strict") is None else tool["strict"],
        }
        if tool.get("description") is not None:
            echoed["description"] = tool["description"]
        return echoed


def response_usage(usage: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A chat completion's ``usage`` in the Responses shape (None stays None)."""
    if not isinstance(usage, Mapping):
        return None
    prompt = _count(usage.get("prompt_tokens"))
    completion = _count(usage.get("completion_tokens"))
    prompt_details = usage.get("prompt_tokens_details")
    completion_details = usage.get("completion_tokens_details")
    cached = (
        _count(prompt_details.get("cached_tokens")) if isinstance(prompt_details, Mapping) else 0
    )
    reasoning = (
        _count(completion_details.get("reasoning_tokens"))
        if isinstance(completion_details, Mapping)
        else 0
    )
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": prompt + completion,
    }


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0
