"""Finding marker strings (``<think>``, ``<tool_call>``…) in text that arrives in pieces."""

from __future__ import annotations


def partial_marker_length(buffer: str, marker: str) -> int:
    """Length of the longest suffix of ``buffer`` that is a proper prefix of ``marker``.

    That suffix must be held back: the next delta may complete the marker.
    """
    for length in range(min(len(marker) - 1, len(buffer)), 0, -1):
        if buffer.endswith(marker[:length]):
            return length
    return 0


def split_at_marker(buffer: str, marker: str) -> tuple[str, str | None, str]:
    """Split a buffer around the first ``marker``.

    Returns ``(before, after, held)``: when the marker is present, ``after`` is the text
    following it and ``held`` is empty; otherwise ``after`` is ``None``, ``before`` is the
    text that is safe to release and ``held`` a possible start of the marker.
    """
    index = buffer.find(marker)
    if index >= 0:
        return buffer[:index], buffer[index + len(marker) :], ""
    keep = partial_marker_length(buffer, marker)
    return buffer[: len(buffer) - keep], None, buffer[len(buffer) - keep :]
