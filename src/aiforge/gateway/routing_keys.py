"""What routing policies may know of a request: its conversation prefix and its session.

Pure functions over the parsed body. The prefix is the conversation's leading text in
order — each message's role and text, then the next — so two turns of one chat, or two
chats with the same system prompt, share a prefix exactly where their prompts (and so the
replica's KV cache) do. It is computed only for deployments whose policy uses it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiforge.router.base import PREFIX_CHARS

__all__ = ["SESSION_HEADER", "conversation_prefix", "session_key"]

SESSION_HEADER = "x-session-id"
_SEPARATOR = "\x1e"  # record separator: cannot be confused with message text boundaries


def conversation_prefix(data: Mapping[str, Any], limit: int = PREFIX_CHARS) -> str:
    """The leading ``limit`` characters of the conversation in ``data`` (a chat or a
    completions body); empty when it has neither messages nor a prompt."""
    messages = data.get("messages")
    if isinstance(messages, list):
        parts: list[str] = []
        size = 0
        for message in messages:
            if not isinstance(message, dict):
                continue
            text = f"{message.get('role', '')}:{_text(message.get('content'))}{_SEPARATOR}"
            parts.append(text)
            size += len(text)
            if size >= limit:
                break
        return "".join(parts)[:limit]
    prompt = data.get("prompt")
    if isinstance(prompt, list):
        prompt = prompt[0] if prompt and isinstance(prompt[0], str) else ""
    return prompt[:limit] if isinstance(prompt, str) else ""


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: the text ones, in order
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def session_key(data: Mapping[str, Any], headers: Mapping[str, str]) -> str | None:
    """The client's session: the ``x-session-id`` header, else OpenAI's ``user`` field."""
    header = headers.get(SESSION_HEADER)
    if header:
        return header
    user = data.get("user")
    return user if isinstance(user, str) and user else None
