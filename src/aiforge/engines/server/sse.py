"""Server-sent events, OpenAI style: ``data: <json>\\n\\n`` … ``data: [DONE]\\n\\n``."""

from __future__ import annotations

from aiforge.protocol.openai.errors import OpenAIError

DONE = b"data: [DONE]\n\n"


def event(payload: str) -> bytes:
    return b"data: " + payload.encode() + b"\n\n"


def error_event(error: OpenAIError) -> bytes:
    """An error after the stream started (status already sent): OpenAI clients raise it."""
    return event(error.envelope().model_dump_json())
