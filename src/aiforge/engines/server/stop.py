"""Stop strings: end generation at the first occurrence, excluding it from the output."""

from __future__ import annotations


class StopMatcher:
    """Filters a text stream so no stop string, nor any part of one, is ever released.

    Text that could be the beginning of a stop string (a suffix of what arrived so far
    that is a prefix of a stop) is held back until the next delta settles it, so stop
    strings that span several tokens are caught while streaming.
    """

    def __init__(self, stops: list[str]) -> None:
        self._stops = [s for s in stops if s]
        self._held = ""
        self.stopped = False

    def push(self, text: str) -> str:
        """Add generated text; return what can be released now. Sets :attr:`stopped`."""
        if self.stopped:
            return ""
        if not self._stops:
            return text
        buffer = self._held + text
        hits = [i for i in (buffer.find(s) for s in self._stops) if i >= 0]
        if hits:
            self.stopped = True
            self._held = ""
            return buffer[: min(hits)]
        keep = self._partial_stop_suffix(buffer)
        self._held = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep]

    def flush(self) -> str:
        """At the end of generation, the held-back text is output after all."""
        held, self._held = self._held, ""
        return "" if self.stopped else held

    def _partial_stop_suffix(self, buffer: str) -> int:
        """Length of the longest suffix of ``buffer`` that is a proper prefix of a stop."""
        best = 0
        for stop in self._stops:
            for length in range(min(len(stop) - 1, len(buffer)), best, -1):
                if buffer.endswith(stop[:length]):
                    best = length
                    break
        return best
