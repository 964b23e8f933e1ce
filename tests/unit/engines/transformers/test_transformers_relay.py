"""EventRelay: the engine thread's events reach their queues in order, one loop wake-up
per burst."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from aiforge.engines.core import TokenEvent
from aiforge.engines.transformers.relay import EventRelay


def _event(token_id: int, finish: bool = False) -> TokenEvent:
    return TokenEvent(token_id, finish_reason="length" if finish else None)


async def test_a_burst_from_another_thread_is_one_wake_up_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loop = asyncio.get_running_loop()
    wake_ups = 0
    real = loop.call_soon_threadsafe

    def counting(callback: Any, *args: Any) -> Any:
        nonlocal wake_ups
        wake_ups += 1
        return real(callback, *args)

    monkeypatch.setattr(loop, "call_soon_threadsafe", counting)
    relay = EventRelay(loop)
    queues: list[asyncio.Queue[TokenEvent | BaseException]] = [asyncio.Queue() for _ in range(8)]
    sinks = [relay.sink(q) for q in queues]

    def engine_step(step: int) -> None:  # what the engine thread does at the end of a step
        for i, sink in enumerate(sinks):
            sink(_event(100 * step + i, finish=step == 2))

    for step in range(3):
        thread = threading.Thread(target=engine_step, args=(step,))
        thread.start()
        thread.join()  # the loop cannot run before the whole burst is queued
        got = [await asyncio.wait_for(q.get(), 5) for q in queues]
        assert [e.token_id for e in got] == [100 * step + i for i in range(8)]
        assert all(q.empty() for q in queues)
    assert wake_ups == 3
    assert all(e.finish_reason == "length" for e in got)


async def test_items_keep_their_order_and_exceptions_pass_through() -> None:
    relay = EventRelay(asyncio.get_running_loop())
    queue: asyncio.Queue[TokenEvent | BaseException] = asyncio.Queue()
    sink = relay.sink(queue)
    error = RuntimeError("engine died")

    def produce() -> None:
        for token_id in range(50):
            sink(_event(token_id))
        sink(error)

    thread = threading.Thread(target=produce)
    thread.start()
    items = [await asyncio.wait_for(queue.get(), 5) for _ in range(51)]
    thread.join()
    assert [getattr(i, "token_id", None) for i in items[:50]] == list(range(50))
    assert items[50] is error


def test_a_closed_loop_swallows_events() -> None:
    loop = asyncio.new_event_loop()
    relay = EventRelay(loop)
    queue: asyncio.Queue[TokenEvent | BaseException] = asyncio.Queue()
    loop.close()
    relay.sink(queue)(_event(1))  # nobody listens any more: no error for the engine thread
    assert queue.empty()
