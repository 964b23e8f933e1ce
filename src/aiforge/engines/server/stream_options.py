"""``stream_options.continuous_usage_stats`` (vLLM's extension): usage on every chunk.

With ``{"include_usage": true, "continuous_usage_stats": true}`` every streamed chunk carries
the request's usage so far (prompt tokens, and the completion tokens generated up to that
chunk), and the final usage chunk follows as usual. The gateway always asks for it so a
stream the client cancels is metered exactly: the last usage it forwarded is what the client
received. Without ``include_usage`` the option does nothing (as in vLLM).

The replica's routes parse these request models; they extend the OpenAI ones with the one
field, so unknown-field handling and every other field stay as in :mod:`aiforge.protocol`.
"""

from __future__ import annotations

from aiforge.protocol.openai.chat import ChatCompletionRequest
from aiforge.protocol.openai.common import StreamOptions
from aiforge.protocol.openai.completions import CompletionRequest


class ReplicaStreamOptions(StreamOptions):
    continuous_usage_stats: bool = False


class ReplicaChatRequest(ChatCompletionRequest):
    stream_options: ReplicaStreamOptions | None = None


class ReplicaCompletionRequest(CompletionRequest):
    stream_options: ReplicaStreamOptions | None = None


def usage_modes(options: StreamOptions | None) -> tuple[bool, bool]:
    """``(include_usage, continuous_usage)`` asked for by a request's ``stream_options``."""
    include = bool(options and options.include_usage)
    continuous = include and bool(getattr(options, "continuous_usage_stats", False))
    return include, continuous
