"""Conversation items: a request's input in stored form, and items as chat messages.

Pure. :func:`stored_items` turns the request's input into the items ``…/input_items``
lists (OpenAI's item resources: every item with an id and a status, a message's text as
``input_text`` — or ``output_text`` for the assistant's); a response's output items already
have those shapes. :func:`chat_messages` turns any sequence of them — a stored conversation
and the new input — into chat completion messages:

* ``system`` and ``developer`` messages become ``system`` messages (the chat templates of
  open models know no ``developer`` role);
* consecutive ``function_call`` items join the assistant message before them as its
  ``tool_calls``; a ``function_call_output`` becomes a ``tool`` message;
* a ``reasoning`` item's text becomes the next assistant message's ``reasoning_content``
  (the model's template decides whether earlier thinking is shown to it again).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from aiforge.protocol.openai.responses import (
    ContentPart,
    FunctionCallItem,
    FunctionCallOutputItem,
    InputImagePart,
    InputTextPart,
    MessageItem,
    OutputTextPart,
    RefusalPart,
    RequestItem,
)

Item = dict[str, Any]
IdFactory = Callable[[str], str]


def new_item_id(prefix: str) -> str:
    """A fresh id such as ``msg_<32 hex>``."""
    return f"{prefix}_{secrets.token_hex(16)}"


# -- the request's input, stored -------------------------------------------------


def stored_items(items: Iterable[RequestItem], new_id: IdFactory = new_item_id) -> list[Item]:
    """The request's input items in stored form (ids kept where the client sent them)."""
    return [_stored(item, new_id) for item in items]


def _stored(item: RequestItem, new_id: IdFactory) -> Item:
    if isinstance(item, MessageItem):
        return _stored_message(item, new_id)
    if isinstance(item, FunctionCallItem):
        return {
            "id": item.id or new_id("fc"),
            "type": "function_call",
            "status": "completed",
            "call_id": item.call_id,
            "name": item.name,
            "arguments": item.arguments,
        }
    if isinstance(item, FunctionCallOutputItem):
        return {
            "id": item.id or new_id("fco"),
            "type": "function_call_output",
            "status": "completed",
            "call_id": item.call_id,
            "output": item.text(),
        }
    stored: Item = {
        "id": item.id or new_id("rs"),
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": part.text} for part in item.summary],
    }
    if item.content is not None:
        stored["content"] = [{"type": "reasoning_text", "text": p.text} for p in item.content]
    return stored


def _stored_message(item: MessageItem, new_id: IdFactory) -> Item:
    parts: Sequence[ContentPart] = (
        [InputTextPart(type="input_text", text=item.content)]
        if isinstance(item.content, str)
        else item.content
    )
    assistant = item.role == "assistant"
    return {
        "id": item.id or new_id("msg"),
        "type": "message",
        "role": item.role,
        "status": "completed",
        "content": [_stored_part(part, assistant=assistant) for part in parts],
    }


def _stored_part(part: ContentPart, *, assistant: bool) -> Item:
    if isinstance(part, RefusalPart):
        return {"type": "refusal", "refusal": part.refusal}
    if isinstance(part, InputImagePart):
        return {"type": "input_image", "image_url": part.image_url, "detail": part.detail}
    if assistant:
        text = part.text if isinstance(part, InputTextPart | OutputTextPart) else ""
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {"type": "input_text", "text": part.text}


# -- items as chat messages ----------------------------------------------------------


def chat_messages(items: Iterable[Item], instructions: str | None = None) -> list[Item]:
    """Chat completion messages for ``items`` (stored shapes), after ``instructions``."""
    messages: list[Item] = []
    if instructions:
        messages.append({"role": "system", "content": instructions})
    reasoning: list[str] = []
    for item in items:
        kind = item.get("type")
        if kind == "reasoning":
            reasoning.append(_reasoning_text(item))
        elif kind == "function_call":
            _assistant_for_call(messages, reasoning)["tool_calls"].append(_tool_call(item))
        elif kind == "function_call_output":
            messages.append(
                {"role": "tool", "tool_call_id": item["call_id"], "content": item["output"]}
            )
        elif item.get("role") == "assistant":
            message: Item = {"role": "assistant", "content": _assistant_text(item)}
            _attach_reasoning(message, reasoning)
            messages.append(message)
        elif kind == "message":
            reasoning.clear()  # thinking that no answer followed: nothing to attach it to
            messages.append(_user_or_system(item))
    return messages


def _assistant_for_call(messages: list[Item], reasoning: list[str]) -> Item:
    """The assistant message a function call belongs to: the last message when it is the
    assistant's (its text, or an earlier call of the same turn), else a new one."""
    if messages and messages[-1]["role"] == "assistant":
        last = messages[-1]
        last.setdefault("tool_calls", [])
        return last
    message: Item = {"role": "assistant", "content": None, "tool_calls": []}
    _attach_reasoning(message, reasoning)
    messages.append(message)
    return message


def _attach_reasoning(message: Item, reasoning: list[str]) -> None:
    text = "".join(reasoning)
    reasoning.clear()
    if text:
        message["reasoning_content"] = text


def _tool_call(item: Item) -> Item:
    return {
        "id": item["call_id"],
        "type": "function",
        "function": {"name": item["name"], "arguments": item["arguments"]},
    }


def _reasoning_text(item: Item) -> str:
    parts = item.get("content") or item.get("summary") or []
    return "".join(str(part.get("text", "")) for part in parts)


def _assistant_text(item: Item) -> str:
    texts = []
    for part in item.get("content", []):
        texts.append(part.get("refusal") if part.get("type") == "refusal" else part.get("text"))
    return "".join(text for text in texts if isinstance(text, str))


def _user_or_system(item: Item) -> Item:
    role = "system" if item["role"] in ("system", "developer") else "user"
    parts = item.get("content", [])
    if all(part.get("type") == "input_text" for part in parts):
        text = "\n".join(part["text"] for part in parts)
        return {"role": role, "content": text}
    content: list[Item] = []
    for part in parts:
        if part.get("type") == "input_image":
            url = {"url": part["image_url"], "detail": part.get("detail", "auto")}
            content.append({"type": "image_url", "image_url": url})
        else:
            content.append({"type": "text", "text": part.get("text", "")})
    return {"role": role, "content": content}
