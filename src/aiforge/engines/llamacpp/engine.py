"""The llama.cpp :class:`~aiforge.engines.core.TokenEngine`: continuous batching in a thread.

A dedicated thread owns the :class:`LlamaRunner` and loops: take new requests and aborts
from the inbox, :meth:`BatchScheduler.schedule`, clear the KV of sequences that left,
``llama_decode`` the batch (ctypes releases the GIL, so the event loop keeps serving),
sample each sequence's next token with :func:`aiforge.engines.sampling.sample_token` (the
same logic as the transformers engine: penalties, grammar masks, seeds, logprobs), and
feed the tokens back to the scheduler. Events go to each request's asyncio queue through
``loop.call_soon_threadsafe``. When nothing runs the thread blocks on the inbox.

Prefix caching (:mod:`aiforge.engines.prefix_cache`) is on when the runner has resident
sequences: finished sequences' KV stays in the context, and a prompt that starts the same
way copies it (``llama_memory_seq_cp``) and decodes only the rest; the first event of each
request says how many prompt tokens it reused.

One request cannot take the thread down: a request that fails to join (its parameters) or
to sample (its constraint) fails alone; a failed ``llama_decode`` fails that batch. Should
the thread die anyway, :meth:`LlamaCppTokenEngine.fatal_error` says why (the replica's
``/health`` reports it), every request it held fails with
:class:`~aiforge.engines.core.EngineDeadError`, and new ones are refused at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field

import torch

from aiforge.engines.core import (
    EngineDeadError,
    EngineModelInfo,
    GenerationRequest,
    TokenEvent,
)
from aiforge.engines.llamacpp.runner import LlamaRunner
from aiforge.engines.llamacpp.scheduler import (
    BatchScheduler,
    SampledOutput,
    SequenceSpec,
    StepPlan,
)
from aiforge.engines.prefix_cache import PrefixCache, PrefixCacheStats
from aiforge.engines.sampling import make_generator, sample_token

__all__ = ["LlamaCppTokenEngine"]

log = logging.getLogger(__name__)

_StreamItem = TokenEvent | BaseException | None
"""What a request's queue carries: a token, the error that ended it, or None (shutdown)."""


@dataclass(slots=True)
class _Sink:
    """Delivers items from the engine thread to one request's asyncio queue."""

    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[_StreamItem] = field(default_factory=asyncio.Queue)

    def put(self, item: _StreamItem) -> None:
        with contextlib.suppress(RuntimeError):  # the event loop has closed: nobody listens
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)


@dataclass(slots=True)
class _Active:
    """Sampling state of one request, owned by the engine thread."""

    request: GenerationRequest
    sink: _Sink
    generator: torch.Generator | None
    generated: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Add:
    request: GenerationRequest
    sink: _Sink


@dataclass(frozen=True, slots=True)
class _Abort:
    request_id: str


class _Stop:
    pass


_Command = _Add | _Abort | _Stop


class LlamaCppTokenEngine:
    """Serves token generation for one GGUF model with continuous batching."""

    def __init__(self, runner: LlamaRunner, *, eos_token_ids: frozenset[int] | None = None) -> None:
        """``eos_token_ids`` end generation unless a request ignores EOS; default: every
        token llama.cpp calls end-of-generation."""
        self._runner = runner
        cache = PrefixCache(max_entries=runner.resident_seqs) if runner.resident_seqs else None
        self._scheduler = BatchScheduler(
            max_num_seqs=runner.max_num_seqs,
            max_batch_tokens=runner.max_batch_tokens,
            max_model_len=runner.max_model_len,
            prefix_cache=cache,
        )
        self._eos = runner.eog_token_ids() if eos_token_ids is None else eos_token_ids
        self._info = EngineModelInfo(
            max_model_len=runner.max_model_len,
            vocab_size=runner.n_vocab,
            eos_token_ids=self._eos,
        )
        self._inbox: queue.SimpleQueue[_Command] = queue.SimpleQueue()
        self._active: dict[str, _Active] = {}
        self._thread: threading.Thread | None = None
        self._load = {"running": 0, "waiting": 0}
        self._fatal: str | None = None
        self._fatal_lock = threading.Lock()

    @property
    def info(self) -> EngineModelInfo:
        return self._info

    @property
    def runner(self) -> LlamaRunner:
        """The runner; only safe to touch while no request is running."""
        return self._runner

    async def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="llamacpp-engine", daemon=True)
        self._thread.start()

    async def shutdown(self) -> None:
        """End every stream (without a finish reason), stop the thread, free the model."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._inbox.put(_Stop())
            await asyncio.to_thread(thread.join)
        self._runner.close()

    def load(self) -> dict[str, int]:
        return dict(self._load)

    def fatal_error(self) -> str | None:
        """None while the engine thread serves; why it died once it has."""
        return self._fatal

    def prefix_cache_stats(self) -> PrefixCacheStats | None:
        """The prefix cache's counters (``/metrics``); None when caching is off (the
        runner was given no resident sequences, or the model cannot be cut at a position)."""
        return self._scheduler.prefix_cache_stats()

    async def embed(self, inputs: Sequence[Sequence[int]]) -> list[list[float]]:
        raise NotImplementedError(
            "the llama.cpp engine serves chat and completion models only; "
            "serve embedding models with the transformers engine"
        )

    async def score(self, prompts: Sequence[Sequence[int]]) -> list[float]:
        raise NotImplementedError(
            "the llama.cpp engine serves chat and completion models only; "
            "serve rerankers with the transformers or vllm engine"
        )

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[TokenEvent, None]:
        """Stream the request's tokens; closing the iterator early aborts the request."""
        if self._thread is None:
            raise RuntimeError("the engine is not running: call start() first")
        n_prompt = len(request.prompt_token_ids)
        if n_prompt >= self._info.max_model_len:
            raise ValueError(
                f"the prompt has {n_prompt} tokens but the context holds {self._info.max_model_len}"
            )
        sink = _Sink(asyncio.get_running_loop())
        with self._fatal_lock:  # the dying thread drains the inbox under this lock
            if self._fatal is not None:
                raise EngineDeadError(f"the engine loop has died: {self._fatal}")
            self._inbox.put(_Add(request, sink))
        finished = False
        try:
            while True:
                item = await sink.queue.get()
                if item is None:
                    finished = True
                    return
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                finished = item.finish_reason is not None
                yield item
                if finished:
                    return
        finally:
            if not finished:
                self._inbox.put(_Abort(request.request_id))

    # --- the engine thread -------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._serve()
        except BaseException as exc:
            log.critical("the llama.cpp engine loop died", exc_info=exc)
            self._die(f"{type(exc).__name__}: {exc}")

    def _die(self, reason: str) -> None:
        """Refuse new requests, then fail every request the thread holds or was sent."""
        error = EngineDeadError(f"the engine loop has died: {reason}")
        with self._fatal_lock:
            self._fatal = reason
            while True:
                try:
                    command = self._inbox.get_nowait()
                except queue.Empty:
                    break
                if isinstance(command, _Add):
                    command.sink.put(error)
        active, self._active = self._active, {}
        for state in active.values():
            state.sink.put(error)

    def _serve(self) -> None:
        while self._apply_commands(block=not self._scheduler.has_unfinished):
            plan = self._scheduler.schedule()
            try:
                self._runner.apply(plan.memory)
            except Exception as exc:  # the KV is not what the plan assumes: fail the batch
                self._fail_running(exc)
                continue
            self._publish_load()
            if plan.has_work:
                self._step(plan)
        for rid in self._scheduler.abort_all():
            self._active.pop(rid).sink.put(None)
        self._runner.apply(self._scheduler.schedule().memory)
        self._publish_load()
        while True:  # requests that arrived after the stop: end their streams too
            try:
                command = self._inbox.get_nowait()
            except queue.Empty:
                return
            if isinstance(command, _Add):
                command.sink.put(None)

    def _publish_load(self) -> None:
        # Replaced whole, never mutated: readers on other threads see one consistent dict.
        self._load = {
            "running": self._scheduler.num_running,
            "waiting": self._scheduler.num_waiting,
        }

    def _apply_commands(self, *, block: bool) -> bool:
        """Apply queued commands (waiting for one when ``block``); False once told to stop."""
        try:
            command = self._inbox.get(block=block)
        except queue.Empty:
            return True
        while True:
            if isinstance(command, _Stop):
                return False
            if isinstance(command, _Add):
                self._admit(command)
            elif self._scheduler.abort(command.request_id):
                self._active.pop(command.request_id, None)
            try:
                command = self._inbox.get_nowait()
            except queue.Empty:
                return True

    def _admit(self, command: _Add) -> None:
        request = command.request
        params = request.params
        stops = set(params.stop_token_ids)
        if not params.ignore_eos:
            stops |= self._eos
        spec = SequenceSpec(
            request.request_id,
            tuple(request.prompt_token_ids),
            params.max_tokens,
            frozenset(stops),
        )
        try:
            generator = make_generator(params.seed)
            self._scheduler.add(spec)
        except Exception as exc:  # its parameters, a duplicate id: it alone fails
            command.sink.put(exc)
            return
        self._active[request.request_id] = _Active(request, command.sink, generator)

    def _step(self, plan: StepPlan) -> None:
        try:
            self._runner.decode(plan.tokens)
        except Exception as exc:  # the model failed: fail the requests in this batch
            self._fail_running(exc)
            return
        outputs = []
        for rid, index in plan.sample:
            try:
                outputs.append(self._sample(rid, index))
            except Exception as exc:  # this request's own sampling: it alone fails
                self._scheduler.abort(rid)
                self._active.pop(rid).sink.put(exc)
        steps = self._scheduler.update_from_output(outputs)
        self._publish_load()  # before the events: a client that saw its last token sees it
        for step in steps:
            active = self._active[step.request_id]
            active.sink.put(step.event)
            if step.event.finish_reason is not None:
                del self._active[step.request_id]

    def _sample(self, request_id: str, batch_index: int) -> SampledOutput:
        active = self._active[request_id]
        request = active.request
        picked = sample_token(
            self._runner.logits(batch_index),
            request.params,
            active.generated,
            active.generator,
            request.constraint,
        )
        active.generated.append(picked.token_id)
        done = False
        if request.constraint is not None:
            request.constraint.accept(picked.token_id)
            done = request.constraint.is_finished()
        return SampledOutput(request_id, picked.token_id, picked.logprob, picked.top_logprobs, done)

    def _fail_running(self, exc: Exception) -> None:
        error = RuntimeError(f"llama.cpp failed: {exc}")
        for rid in list(self._scheduler.running_seq_ids()):
            self._scheduler.abort(rid)
            self._active.pop(rid).sink.put(error)
        # A failed decode may have written past what the scheduler counts: trust no entry.
        self._scheduler.clear_prefix_cache()
