import asyncio
import threading

import pytest

from aiforge.engines.transformers.__main__ import in_passing_thread


async def test_the_call_runs_in_a_thread_that_ends_with_it() -> None:
    seen: list[threading.Thread] = []

    def work(a: int, *, b: int) -> int:
        seen.append(threading.current_thread())
        return a + b

    assert await in_passing_thread(work, 2, b=3) == 5
    assert seen[0] is not threading.main_thread()
    seen[0].join(timeout=5)
    assert not seen[0].is_alive()  # its OpenMP team, if any, went with it


async def test_an_exception_reaches_the_caller() -> None:
    def fail() -> None:
        raise ValueError("no such model")

    with pytest.raises(ValueError, match="no such model"):
        await in_passing_thread(fail)


async def test_the_event_loop_runs_while_the_call_blocks() -> None:
    release = threading.Event()
    call = asyncio.ensure_future(in_passing_thread(release.wait, 5))
    await asyncio.sleep(0.01)
    assert not call.done()
    release.set()
    assert await call is True
