"""The engine loop: runs scheduler + runner steps in a dedicated thread.

Torch releases the GIL inside its kernels, so the asyncio server stays responsive while a
step runs. Everything crossing threads goes through :meth:`EngineLoop.submit` /
:meth:`EngineLoop.abort` (an inbox drained between steps, i.e. at token boundaries) and
each request's *sink*, a callable the loop invokes from its thread with every
:class:`TokenEvent`, or with the exception that ended the request. The asyncio side makes
its sink thread-safe through an :class:`~aiforge.engines.transformers.relay.EventRelay`
(one ``call_soon_threadsafe`` per burst of events).

One request cannot take the loop down: a request that fails to join (its parameters) or to
sample (its constraint) fails alone, and a failed forward pass fails that step's requests.
Should the thread die anyway, it says so (:meth:`EngineLoop.fatal_error`, which the
replica's ``/health`` reports), fails every request it held with
:class:`~aiforge.engines.core.EngineDeadError`, and refuses new ones at once.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from aiforge.engines.core import EngineDeadError, GenerationRequest, TokenEvent
from aiforge.engines.prefix_cache import PrefixCacheStats
from aiforge.engines.transformers.runner import ModelRunner
from aiforge.engines.transformers.scheduler import Scheduler, SchedulerOutput, StopCriteria

__all__ = ["EngineLoop", "EventSink"]

log = logging.getLogger(__name__)

EventSink = Callable[[TokenEvent | BaseException], None]


@dataclass(frozen=True, slots=True)
class _Submit:
    request: GenerationRequest
    stop: StopCriteria
    sink: EventSink


@dataclass(frozen=True, slots=True)
class _Abort:
    request_id: str


class EngineLoop:
    """Owns the scheduler and runner; only its thread touches them."""

    def __init__(self, scheduler: Scheduler, runner: ModelRunner) -> None:
        self._scheduler = scheduler
        self._runner = runner
        self._inbox: deque[_Submit | _Abort] = deque()
        self._wakeup = threading.Condition()
        self._sinks: dict[str, EventSink] = {}
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._load = {"running": 0, "waiting": 0}
        self._fatal: str | None = None

    # -- called from any thread -----------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="aiforge-engine", daemon=True)
        self._thread.start()

    def submit(self, request: GenerationRequest, stop: StopCriteria, sink: EventSink) -> None:
        self._post(_Submit(request, stop, sink))

    def abort(self, request_id: str) -> None:
        self._post(_Abort(request_id))

    def shutdown(self, timeout: float = 30.0) -> None:
        """Abort everything, stop the thread and wait for it."""
        with self._wakeup:
            self._stopping = True
            self._wakeup.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    def load(self) -> dict[str, int]:
        return dict(self._load)

    def fatal_error(self) -> str | None:
        """None while the thread serves; why it died once it has."""
        return self._fatal

    def prefix_cache_stats(self) -> PrefixCacheStats | None:
        return self._scheduler.prefix_cache_stats()

    def _post(self, message: _Submit | _Abort) -> None:
        with self._wakeup:
            if self._fatal is not None:
                if isinstance(message, _Submit):
                    raise EngineDeadError(f"the engine loop has died: {self._fatal}")
                return
            self._inbox.append(message)
            self._wakeup.notify()

    # -- the engine thread -----------------------------------------------------------
    def _run(self) -> None:
        try:
            self._serve()
        except BaseException as exc:
            log.critical("the engine loop died", exc_info=exc)
            self._die(f"{type(exc).__name__}: {exc}")

    def _die(self, reason: str) -> None:
        """Refuse new requests, then fail every request the loop holds or was sent."""
        error = EngineDeadError(f"the engine loop has died: {reason}")
        with self._wakeup:
            self._fatal = reason
            pending = [m for m in self._inbox if isinstance(m, _Submit)]
            self._inbox.clear()
        for message in pending:
            message.sink(error)
        sinks, self._sinks = self._sinks, {}
        for sink in sinks.values():
            sink(error)

    def _serve(self) -> None:
        while True:
            with self._wakeup:
                while not self._inbox and not self._stopping and not self._has_work():
                    self._wakeup.wait()
                if self._stopping:
                    break
                messages = list(self._inbox)
                self._inbox.clear()
            for message in messages:
                self._handle(message)
            self._step()
        self._fail_all(RuntimeError("the engine is shutting down"))

    def _has_work(self) -> bool:
        return self._scheduler.has_unfinished()

    def _handle(self, message: _Submit | _Abort) -> None:
        if isinstance(message, _Abort):
            self._scheduler.abort(message.request_id)
            self._sinks.pop(message.request_id, None)
            return
        request = message.request
        try:
            self._scheduler.add(
                request.request_id,
                request.prompt_token_ids,
                message.stop,
                # Image KV depends on the pixels, not on the placeholder ids: never shared.
                cacheable=request.images is None,
            )
        except ValueError as exc:  # a duplicate id, a prompt that does not fit
            message.sink(exc)
            return
        try:
            self._runner.add_request(request)
        except Exception as exc:  # its parameters (a seed torch refuses…): it alone fails
            self._scheduler.abort(request.request_id)
            message.sink(exc)
            return
        self._sinks[request.request_id] = message.sink

    def _step(self) -> None:
        step = self._scheduler.schedule()
        try:
            self._execute(step)
        except Exception as exc:  # a bad step must not kill the replica: fail its requests
            log.exception("engine step failed")
            self._fail_all(exc)
            # The step may have stopped between copies: no resident KV is trusted now.
            self._scheduler.clear_prefix_cache()
        self._refresh_load()

    def _refresh_load(self) -> None:
        self._load = {
            "running": self._scheduler.num_running,
            "waiting": self._scheduler.num_waiting,
        }

    def _execute(self, step: SchedulerOutput) -> None:
        if not step.has_work and not step.moves:
            self._runner.drop(step.freed)
            return
        result = self._runner.execute(step)  # moves first: the scheduler counts on them
        for request_id, exc in result.failed.items():
            self._scheduler.abort(request_id)
            sink = self._sinks.pop(request_id, None)
            if sink is not None:
                sink(exc)
        events = self._scheduler.update_from_output(
            step, result.token_ids(), result.constraint_finished
        )
        # Before delivering: a consumer that sees its last token also sees the freed slot.
        self._refresh_load()
        for event in events:
            sampled = result.sampled[event.request_id]
            sink = (
                self._sinks.pop(event.request_id, None)
                if event.finish_reason is not None
                else self._sinks.get(event.request_id)
            )
            if sink is not None:
                sink(
                    TokenEvent(
                        event.token_id,
                        sampled.logprob,
                        sampled.top_logprobs,
                        event.finish_reason,
                        event.cached_tokens,
                    )
                )

    def _fail_all(self, exc: BaseException) -> None:
        for request_id in self._scheduler.abort_all():
            sink = self._sinks.pop(request_id, None)
            if sink is not None:
                sink(exc)
        self._runner.drop(self._scheduler.schedule().freed)
