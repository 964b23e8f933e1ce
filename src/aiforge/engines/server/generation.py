"""Running one prompt's sequences on the engine and turning tokens into text deltas.

This is where a :class:`TokenEngine`'s token stream meets OpenAI semantics shared by chat
and completions: detokenisation, stop strings, ``n`` parallel sequences, usage counting,
and closing the engine's stream early (stop string hit, client gone) so the engine frees
the sequence's batch slot.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeVar

from transformers import PreTrainedTokenizerBase

from aiforge.engines.core import (
    EngineDeadError,
    GenerationRequest,
    ImageInputs,
    SamplingParams,
    TokenConstraint,
    TokenEngine,
    TokenEvent,
)
from aiforge.engines.server.detokenizer import IncrementalDetokenizer
from aiforge.engines.server.metrics import ReplicaMetrics
from aiforge.engines.server.stop import StopMatcher
from aiforge.protocol.openai.common import Usage, make_usage
from aiforge.protocol.openai.errors import OpenAIError, engine_error

T = TypeVar("T")

CLIENT_CLOSED_STATUS = 499
"""The status recorded for a request whose client disconnected before its answer (nginx's)."""


@dataclass(slots=True)
class SequenceDelta:
    """Text released by one sequence, with the tokens (and logprobs) that produced it."""

    index: int
    text: str
    tokens: list[TokenEvent] = field(default_factory=list)
    finish_reason: str | None = None
    """``"stop"`` or ``"length"`` on the sequence's last delta."""


@dataclass(slots=True)
class GenerationStats:
    """Usage and timing of one request, filled in as its sequences run."""

    prompt_tokens: int
    completion_tokens: int = 0
    cached_tokens: int | None = None
    started: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None

    def usage(self) -> Usage:
        return make_usage(self.prompt_tokens, self.completion_tokens, self.cached_tokens)

    def observe(self, metrics: ReplicaMetrics, endpoint: str, status: int) -> None:
        """Record the finished request (tokens, TTFT, latency) in the replica's metrics."""
        metrics.observe_request(
            endpoint,
            status,
            prompt_tokens=self.prompt_tokens,
            generation_tokens=self.completion_tokens,
            ttft_s=None if self.first_token_at is None else self.first_token_at - self.started,
            latency_s=time.perf_counter() - self.started,
        )


@dataclass(frozen=True, slots=True)
class SequenceSpec:
    """One sequence to generate for a prompt."""

    request_id: str
    index: int
    prompt_token_ids: list[int]
    params: SamplingParams
    stops: list[str]
    constraint: Callable[[], TokenConstraint | None] = lambda: None
    images: ImageInputs | None = None


def sequence_params(base: SamplingParams, index: int) -> SamplingParams:
    """Params for the ``index``-th of ``n`` sequences: seeds differ so the samples do."""
    if base.seed is None or index == 0:
        return base
    return replace(base, seed=base.seed + index)


async def run_sequence(
    engine: TokenEngine,
    tokenizer: PreTrainedTokenizerBase,
    spec: SequenceSpec,
    stats: GenerationStats,
) -> AsyncIterator[SequenceDelta]:
    """Stream one sequence's text. Closing this iterator aborts the engine request."""
    request = GenerationRequest(
        request_id=spec.request_id,
        prompt_token_ids=spec.prompt_token_ids,
        params=spec.params,
        constraint=spec.constraint(),
        images=spec.images,
    )
    detokenizer = IncrementalDetokenizer(tokenizer)
    stop = StopMatcher(spec.stops)
    pending: list[TokenEvent] = []
    events = engine.generate(request)
    try:
        async for event in events:
            _count(stats, event)
            pending.append(event)
            text = stop.push(detokenizer.push(event.token_id))
            if event.finish_reason is not None or stop.stopped:
                if not stop.stopped:
                    text += stop.push(detokenizer.flush())
                    text += stop.flush()
                yield SequenceDelta(spec.index, text, pending, _finish(event, stop))
                return
            if text:
                yield SequenceDelta(spec.index, text, pending)
                pending = []
    except (asyncio.CancelledError, GeneratorExit, OpenAIError):
        raise
    except EngineDeadError as exc:
        raise engine_error(f"The engine is down: {exc}", unavailable=True) from exc
    except Exception as exc:
        raise engine_error(f"The engine failed while generating: {exc}") from exc
    finally:
        # Closing the engine's stream aborts the request and frees its batch slot.
        close = getattr(events, "aclose", None)
        if close is not None:
            await close()
    # The engine ended the stream without a finish reason: it is shutting down.
    raise engine_error("The engine stopped before the sequence finished.", unavailable=True)


def _count(stats: GenerationStats, event: TokenEvent) -> None:
    if stats.first_token_at is None:
        stats.first_token_at = time.perf_counter()
    if stats.completion_tokens == 0 or event.cached_prompt_tokens:
        stats.cached_tokens = max(stats.cached_tokens or 0, event.cached_prompt_tokens)
    stats.completion_tokens += 1


def _finish(event: TokenEvent, stop: StopMatcher) -> str:
    if stop.stopped:
        return "stop"
    if event.finish_reason == "abort":
        raise engine_error("The request was aborted by the engine.", unavailable=True)
    return event.finish_reason or "stop"


async def merge_streams(streams: Sequence[AsyncIterator[T]]) -> AsyncIterator[T]:
    """Items of several async iterators as they arrive.

    Every iterator is driven by its own task; when the consumer stops early (or fails),
    the tasks are cancelled, which closes the iterators (and so aborts engine requests).
    """
    if len(streams) == 1:
        only = streams[0]
        try:
            async for item in only:
                yield item
        finally:
            close = getattr(only, "aclose", None)
            if close is not None:
                await close()
        return
    queue: asyncio.Queue[tuple[int, T | None, BaseException | None]] = asyncio.Queue()

    async def drain(position: int, stream: AsyncIterator[T]) -> None:
        try:
            async for item in stream:
                await queue.put((position, item, None))
        except Exception as exc:
            await queue.put((position, None, exc))
            return
        await queue.put((position, None, None))

    tasks = [asyncio.create_task(drain(i, s)) for i, s in enumerate(streams)]
    try:
        remaining = len(tasks)
        while remaining:
            _, received, error = await queue.get()
            if error is not None:
                raise error
            if received is None:
                remaining -= 1
                continue
            yield received
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
