"""``stream_options`` of the replica's streamed routes: the usage the request asked for.

With ``{"include_usage": true}`` the stream ends with a usage chunk (empty ``choices``);
adding ``"continuous_usage_stats": true`` (vLLM's extension, a field of
:class:`aiforge.protocol.openai.common.StreamOptions`) puts the usage so far — prompt
tokens, and the completion tokens generated up to that chunk — on every chunk too. The
gateway always asks for both so a stream the client cancels is metered exactly: the last
usage it forwarded is what the client received. Without ``include_usage`` the option does
nothing (as in vLLM).
"""

from __future__ import annotations

from aiforge.protocol.openai.common import StreamOptions


def usage_modes(options: StreamOptions | None) -> tuple[bool, bool]:
    """``(include_usage, continuous_usage)`` asked for by a request's ``stream_options``."""
    include = bool(options and options.include_usage)
    continuous = include and bool(options and options.continuous_usage_stats)
    return include, continuous
