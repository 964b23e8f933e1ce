"""``EventRelay``: the engine thread's token events into one asyncio loop, one wake-up per batch.

The engine thread commits a token for every running sequence at the end of a step and
hands each to its request's sink. Waking the event loop once per token (one
``call_soon_threadsafe``, i.e. one write to the loop's self-pipe and one more pass of its
selector, per sequence per step) costs the loop thread as many wake-ups as there are
streams; on a machine whose cores all run torch's OpenMP threads each wake-up preempts
one of them. The relay queues the events and wakes the loop only when no wake-up is
already pending: the tokens of one step, sunk one after the other while the engine thread
holds the GIL, reach the loop in one wake-up, each queue's items in the order they were sunk.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable

from aiforge.engines.core import TokenEvent

__all__ = ["EventRelay"]

Item = TokenEvent | BaseException


class EventRelay:
    """Delivers items to ``asyncio.Queue``\\ s of one event loop from any thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._lock = threading.Lock()
        self._pending: list[tuple[asyncio.Queue[Item], Item]] = []
        self._wake_pending = False

    def sink(self, queue: asyncio.Queue[Item]) -> Callable[[Item], None]:
        """A sink (any thread) that puts each item into ``queue`` on the relay's loop."""

        def put(item: Item) -> None:
            self.put(queue, item)

        return put

    def put(self, queue: asyncio.Queue[Item], item: Item) -> None:
        """Queue ``item`` for ``queue``; wake the loop unless a wake-up is pending."""
        with self._lock:
            self._pending.append((queue, item))
            if self._wake_pending:
                return
            self._wake_pending = True
        # RuntimeError: the event loop closed, so nobody is listening any more.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        """On the loop: hand every queued item to its queue, in order."""
        with self._lock:
            batch, self._pending = self._pending, []
            self._wake_pending = False
        for queue, item in batch:
            queue.put_nowait(item)
