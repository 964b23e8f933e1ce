"""``BatchRunner``: runs every batch of the platform database through the gateway's
request path, in the gateway process (``aiforge serve`` starts and stops it).

The decisions are :mod:`aiforge.platform.batches.plan`'s; this is the loop around them:

* Every couple of seconds, and whenever a batch is created or cancelled, it takes (or
  renews) the lease of the active batches (:meth:`BatchStore.claim`) and advances each:
  a ``validating`` batch's input file is checked, an ``in_progress`` one has its next lines
  read from the file into the schedule, a drained one is finished (output files written),
  a ``cancelling`` or expired one drops the lines not started and is finished once its
  running lines end.
* Several times a second, and whenever a line ends, it starts the lines the schedule
  allows (``batch_concurrency`` at once, yielding to interactive traffic). Each line goes
  through :meth:`OpenAIHandler.submit` — admission, routing, failover, one usage record
  under the line's request id — and its result is stored in its own transaction as it
  ends. Lines with a stored result never run again; on a restart, every other line runs.
* On stop (after the gateway drained: lines still running were ended with a 503 and
  noted as attempts) it waits for the lines' last writes and releases its leases.

Database I/O runs in worker threads, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from aiforge.gateway.handler import InternalRequest, OpenAIHandler
from aiforge.platform.batches.lines import InputLine
from aiforge.platform.batches.output import tokens_of
from aiforge.platform.batches.plan import LineSchedule, LineWork, backoff_s, judge, may_start
from aiforge.platform.batches.store import BatchStore, LineResult
from aiforge.platform.batches.table import BatchRow
from aiforge.platform.batches.validation import (
    ENDPOINT_KINDS,
    BatchRequest,
    InputCheck,
    LineError,
    check_input,
    parse_request,
)
from aiforge.protocol.openai.errors import OpenAIError
from aiforge.types import Principal

log = logging.getLogger(__name__)

TICK_S = 0.25
CLAIM_EVERY_S = 2.0
LEASE_S = 30.0
LOW_WATER_LINES = 64
"""Lines read ahead from a batch's file (refilled when fewer are queued)."""


def principal_of(row: BatchRow) -> Principal:
    record = dict(row.principal)
    allowed = record.get("allowed_models")
    record["allowed_models"] = None if allowed is None else frozenset(allowed)
    return Principal(**record)


@dataclass
class _Active:
    """A batch this runner holds."""

    row: BatchRow
    principal: Principal
    lines: Iterator[InputLine] | None = None
    exhausted: bool = False
    done: set[int] = field(default_factory=set)
    attempts: dict[int, int] = field(default_factory=dict)
    busy: bool = False
    """A validation, read or finish of it is under way."""


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    body: Any
    code: str | None = None
    retry_after_s: float | None = None


class BatchRunner:
    def __init__(
        self,
        store: BatchStore,
        *,
        runner_id: str,
        concurrency: int,
        max_lines: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.runner_id = runner_id
        self.max_lines = max_lines
        self._clock = clock
        self._schedule = LineSchedule(concurrency)
        self._batches: dict[str, _Active] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._line_tasks: set[asyncio.Task[None]] = set()
        self._handler: OpenAIHandler | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._main: asyncio.Task[None] | None = None
        self._wakeup = asyncio.Event()
        self._claim_due = True
        self._stopping = False

    # -- lifecycle ------------------------------------------------------------------
    def start(self, handler: OpenAIHandler) -> None:
        """Run on the current event loop, submitting lines to ``handler``."""
        self._handler = handler
        self._loop = asyncio.get_running_loop()
        self._main = asyncio.create_task(self._run(), name="aiforge-batch-runner")

    def wake(self) -> None:
        """A batch was created or cancelled: look at the database now. Thread-safe."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            on_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            self._claim_now()
        else:
            loop.call_soon_threadsafe(self._claim_now)

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Start no more lines; wait up to ``timeout_s`` for running ones to be written
        (the gateway's drain ends them), then release this runner's leases."""
        self._stopping = True
        self._wakeup.set()
        if self._main is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._main
        pending = self._tasks | self._line_tasks
        if pending:
            _, late = await asyncio.wait(pending, timeout=timeout_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.store.release, self.runner_id)

    def _claim_now(self) -> None:
        self._claim_due = True
        self._wakeup.set()

    async def _run(self) -> None:
        last_claim = float("-inf")
        while not self._stopping:
            now = self._clock()
            if self._claim_due or now - last_claim >= CLAIM_EVERY_S:
                self._claim_due = False
                last_claim = now
                try:
                    await self._refresh()
                except Exception:  # the database is down: try again on the next claim
                    log.exception("batch runner: refreshing batches failed")
            self._dispatch()
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), TICK_S)

    # -- batches --------------------------------------------------------------------
    async def _refresh(self) -> None:
        rows = await asyncio.to_thread(self.store.claim, self.runner_id, LEASE_S)
        held = {row.id for row in rows}
        for batch_id in list(self._batches):
            if batch_id not in held and not self._schedule.running_of(batch_id):
                self._forget(batch_id)
        for row in rows:
            active = self._batches.get(row.id)
            if active is None:
                active = self._batches[row.id] = _Active(row, principal_of(row))
                self._schedule.track(row.id, row.model or "")
            active.row = row
            if not active.busy:
                self._advance(active)

    def _advance(self, active: _Active) -> None:
        row = active.row
        if row.status == "validating":
            self._spawn(active, self._validate(active))
        elif row.status == "finalizing":
            self._spawn(active, self._finish(active, "completed"))
        elif row.status == "cancelling":
            self._wind_down(active, "cancelled")
        elif row.status == "in_progress":
            self._schedule.track(row.id, row.model or "")
            if datetime.now(UTC) >= row.expires_at:
                self._wind_down(active, "expired")
            elif active.lines is None or self._drained(active) or self._short(active):
                self._spawn(active, self._read(active))

    def _short(self, active: _Active) -> bool:
        """Fewer lines are queued than the read-ahead, and the file has more."""
        return not active.exhausted and self._schedule.queued(active.row.id) < LOW_WATER_LINES

    def _drained(self, active: _Active) -> bool:
        batch_id = active.row.id
        return (
            active.exhausted
            and not self._schedule.queued(batch_id)
            and not self._schedule.running_of(batch_id)
        )

    def _wind_down(self, active: _Active, final_status: str) -> None:
        self._schedule.drop(active.row.id)
        if not self._schedule.running_of(active.row.id):
            self._spawn(active, self._finish(active, final_status))

    def _forget(self, batch_id: str) -> None:
        self._batches.pop(batch_id, None)
        self._schedule.forget(batch_id)

    def _spawn(self, active: _Active, work: Any) -> None:
        active.busy = True

        async def run() -> None:
            try:
                await work
            except Exception:
                log.exception("batch runner: batch %s", active.row.id)
            finally:
                active.busy = False

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _validate(self, active: _Active) -> None:
        row = active.row
        assert self._handler is not None
        visible = set(self._handler.visible_models(active.principal))

        def refusal(model: str) -> str | None:
            if model in visible:
                return None
            return f"The model `{model}` does not exist or is not available to this project."

        def check() -> InputCheck:
            try:
                return check_input(
                    self.store.requests(row), endpoint=row.endpoint, max_lines=self.max_lines,
                    model_refusal=refusal,
                )  # fmt: skip
            except FileNotFoundError:
                missing = InputCheck()
                missing.add_error(LineError("input_file_missing", "The input file is gone."))
                return missing

        result = await asyncio.to_thread(check)
        await asyncio.to_thread(self.store.validated, row.id, result)
        self._claim_now()

    async def _read(self, active: _Active) -> None:
        """Queue the batch's next lines (first: which lines already have a result); finish
        the batch once every line has one."""
        row = active.row
        if active.lines is None:
            done, attempts = await asyncio.to_thread(self.store.progress, row.id)
            active.done, active.attempts = done, attempts
            active.lines = await asyncio.to_thread(self.store.requests, row)
        if self._drained(active):
            await self._finish(active, "completed")
            return
        works = await asyncio.to_thread(self._next_works, active, LOW_WATER_LINES * 2)
        for work in works:
            self._schedule.add(work)
        self._wakeup.set()

    def _next_works(self, active: _Active, count: int) -> list[LineWork]:
        """Read up to ``count`` more lines without a result (in a worker thread)."""
        assert active.lines is not None
        works: list[LineWork] = []
        row = active.row
        while len(works) < count:
            line = next(active.lines, None)
            if line is None:
                active.exhausted = True
                break
            if line.index in active.done:
                continue
            parsed = parse_request(line.raw, endpoint=row.endpoint, number=line.number)
            if not isinstance(parsed, BatchRequest):  # the file was validated: cannot happen
                log.error("batch %s: line %d no longer parses", row.id, line.number)
                continue
            works.append(LineWork(
                batch_id=row.id, index=line.index, custom_id=parsed.custom_id,
                body=orjson.dumps(parsed.body), attempt=active.attempts.get(line.index, 0),
            ))  # fmt: skip
        return works

    async def _finish(self, active: _Active, final_status: str) -> None:
        row = active.row
        if final_status == "completed" and row.status == "in_progress":
            await asyncio.to_thread(
                self.store.set_status, row.id, "finalizing", only_from=("in_progress",)
            )
        await asyncio.to_thread(self.store.finish, row, final_status)
        self._forget(row.id)
        log.info("batch %s: %s", row.id, final_status)

    # -- lines ----------------------------------------------------------------------
    def _dispatch(self) -> None:
        if self._stopping or self._handler is None or self._handler.draining:
            return
        for work in self._schedule.next_lines(self._clock(), self._may_start_on):
            active = self._batches.get(work.batch_id)
            if active is None:
                self._schedule.done(work)
                continue
            task = asyncio.create_task(self._run_line(active, work))
            self._line_tasks.add(task)
            task.add_done_callback(self._line_tasks.discard)

    def _may_start_on(self, model: str) -> bool:
        assert self._handler is not None
        router = self._handler.directory.router(model)
        if router is None:  # not served (any more): the line's 404 is its result
            return True
        return may_start(
            ready_replicas=router.ready_count,
            in_flight=router.in_flight_total(),
            batch_in_flight=self._schedule.running_on(model),
        )

    async def _run_line(self, active: _Active, work: LineWork) -> None:
        row = active.row
        request = InternalRequest(
            principal=active.principal, kind=ENDPOINT_KINDS[row.endpoint], path=row.endpoint,
            body=work.body, request_id=work.request_id,
        )  # fmt: skip
        answer = await self._attempt(request)
        work.failures += answer.status != 200
        verdict = judge(answer.status, answer.code, failures=work.failures,
                        retry_after_s=answer.retry_after_s)  # fmt: skip
        try:
            if verdict.action == "store":
                await self._store(active, work, answer, verdict.outcome or "failed")
                return
            work.attempt += 1
            try:
                await asyncio.to_thread(
                    self.store.record_attempt, work.batch_id, work.index, work.attempt
                )
            except Exception:
                log.exception("batch %s: noting attempt of line %d", work.batch_id, work.index)
            if verdict.action == "retry":
                self._schedule.retry(work, self._clock() + verdict.delay_s)
            else:
                self._schedule.done(work)
        finally:
            self._after_line(active)

    async def _store(self, active: _Active, work: LineWork, answer: _Answer, outcome: str) -> None:
        result = LineResult(
            batch_id=work.batch_id, index=work.index, custom_id=work.custom_id, outcome=outcome,
            status_code=answer.status, request_id=work.request_id, body=answer.body,
            tokens=tokens_of(answer.body),
        )  # fmt: skip
        try:
            await asyncio.to_thread(self.store.store_result, result)
        except Exception:  # the database is down: run it again later (metered once: same id)
            log.exception("batch %s: storing line %d failed", work.batch_id, work.index)
            work.failures += 1
            self._schedule.retry(work, self._clock() + backoff_s(work.failures))
            return
        active.done.add(work.index)
        self._schedule.done(work)

    def _after_line(self, active: _Active) -> None:
        if self._drained(active) or active.row.status != "in_progress":
            self._claim_now()
        else:
            self._wakeup.set()

    async def _attempt(self, request: InternalRequest) -> _Answer:
        """Submit one attempt; its status, body and error code however it ends."""
        assert self._handler is not None
        try:
            response = await self._handler.submit(request)
        except OpenAIError as refused:
            retry_after = _seconds(refused.headers.get("retry-after"))
            return _Answer(refused.status_code, orjson.loads(refused.body()), refused.code,
                           retry_after)  # fmt: skip
        except Exception:
            log.exception("batch line %s failed in the gateway", request.request_id)
            failed = OpenAIError("The gateway failed on this request.", status_code=500,
                                 type="server_error", code="gateway_error")  # fmt: skip
            return _Answer(500, orjson.loads(failed.body()), failed.code)
        return _answer_of(response.status_code, bytes(response.body),
                          response.headers.get("retry-after"))  # fmt: skip


def _answer_of(status: int, raw: bytes, retry_after: str | None) -> _Answer:
    """An answer's status, JSON body (a non-JSON one wrapped as an error) and error code."""
    try:
        body: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = {"error": {"message": raw.decode("utf-8", "replace")[:1000],
                          "type": "server_error", "param": None, "code": None}}  # fmt: skip
    error = body.get("error") if isinstance(body, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return _Answer(status, body, code if isinstance(code, str) else None, _seconds(retry_after))


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
