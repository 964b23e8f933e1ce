"""``/v1/completions``: raw prompts (text or token ids), ``n`` sequences per prompt."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiforge.engines.core import TokenEvent
from aiforge.engines.server.context import ReplicaContext, request_id
from aiforge.engines.server.generation import (
    CLIENT_CLOSED_STATUS,
    GenerationStats,
    SequenceDelta,
    SequenceSpec,
    merge_streams,
    run_sequence,
    sequence_params,
)
from aiforge.engines.server.logprobs import completion_logprobs
from aiforge.engines.server.params import (
    RequestedSampling,
    as_batch,
    build_sampling_params,
    normalize_stop,
    resolve_max_tokens,
)
from aiforge.engines.server.sse import DONE, error_event, event
from aiforge.engines.server.stream_options import usage_modes
from aiforge.protocol.openai.completions import (
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
)
from aiforge.protocol.openai.errors import OpenAIError, invalid_param

ENDPOINT = "completions"


@dataclass(slots=True)
class CompletionPlan:
    id: str
    created: int
    specs: list[SequenceSpec]
    echoes: list[str]
    """Per choice: the prompt text to prepend (``echo``), else ''."""
    stats: GenerationStats
    logprobs: int | None
    include_usage: bool
    continuous_usage: bool = False
    """Usage so far on every chunk (``stream_options.continuous_usage_stats``)."""


class CompletionService:
    """Handles text completions for one replica (kept on ``app.state.completions``)."""

    def __init__(self, ctx: ReplicaContext) -> None:
        self._ctx = ctx

    async def create(self, request: CompletionRequest) -> CompletionResponse | AsyncIterator[bytes]:
        plan = await self._plan(request)
        if request.stream:
            return self._stream(plan)
        return await self._complete(plan)

    async def _plan(self, request: CompletionRequest) -> CompletionPlan:
        ctx = self._ctx
        ctx.check_model(request.model)
        _validate(request)
        batch = as_batch(request.prompt)
        if not batch:
            raise invalid_param("`prompt` must not be empty.", "prompt")
        ctx.limits.check_sequences(len(batch), request.n)
        ctx.limits.check_prompt_chars((p for p in batch if isinstance(p, str)), "prompt")
        # Tokenizing a big request takes seconds: never on the event loop.
        prompts, echo_texts = await asyncio.to_thread(self._prompts, batch, request.echo)
        rid = request_id("cmpl")
        include_usage, continuous_usage = usage_modes(request.stream_options)
        stops = normalize_stop(request.stop)
        specs, echoes = [], []
        for p, ids in enumerate(prompts):
            max_tokens = resolve_max_tokens(
                request.max_tokens,
                prompt_tokens=len(ids),
                max_model_len=ctx.max_model_len,
                prompt_param="prompt",
            )
            base = build_sampling_params(
                _requested(request),
                ctx.defaults,
                max_tokens=max_tokens,
                vocab_size=ctx.engine.info.vocab_size,
            )
            echo = echo_texts[p]
            for i in range(request.n):
                index = p * request.n + i
                specs.append(
                    SequenceSpec(f"{rid}-{index}", index, ids, sequence_params(base, i), stops)
                )
                echoes.append(echo)
        return CompletionPlan(
            id=rid,
            created=int(time.time()),
            specs=specs,
            echoes=echoes,
            stats=GenerationStats(prompt_tokens=sum(len(ids) for ids in prompts)),
            logprobs=request.logprobs,
            include_usage=include_usage,
            continuous_usage=continuous_usage,
        )

    def _prompts(
        self, prompts: list[str | list[int]], echo: bool
    ) -> tuple[list[list[int]], list[str]]:
        """Each prompt's token ids (checked) and, with ``echo``, its text (a worker thread)."""
        ctx = self._ctx
        vocab = ctx.engine.info.vocab_size
        encoded = []
        for item in prompts:
            ids = (
                list(ctx.tokenizer.encode(item, add_special_tokens=False))
                if isinstance(item, str)
                else list(item)
            )
            if not ids:
                raise invalid_param("`prompt` must not be empty.", "prompt")
            if any(not 0 <= t < vocab for t in ids):
                raise invalid_param(f"Token ids must be in [0, {vocab}).", "prompt")
            ctx.limits.check_prompt_tokens(len(ids), "prompt")
            encoded.append(ids)
        echoes = [str(ctx.tokenizer.decode(ids)) if echo else "" for ids in encoded]
        return encoded, echoes

    def _deltas(self, plan: CompletionPlan) -> AsyncIterator[SequenceDelta]:
        ctx = self._ctx
        return merge_streams(
            [run_sequence(ctx.engine, ctx.tokenizer, spec, plan.stats) for spec in plan.specs]
        )

    async def _complete(self, plan: CompletionPlan) -> CompletionResponse:
        texts = list(plan.echoes)
        tokens: list[list[TokenEvent]] = [[] for _ in plan.specs]
        finish = ["stop"] * len(plan.specs)
        status = 500
        deltas = self._deltas(plan)
        try:
            async for delta in deltas:
                texts[delta.index] += delta.text
                tokens[delta.index].extend(delta.tokens)
                if delta.finish_reason is not None:
                    finish[delta.index] = delta.finish_reason
            status = 200
        except asyncio.CancelledError:  # the client left: the engine requests are aborted
            status = CLIENT_CLOSED_STATUS
            raise
        finally:
            await _aclose(deltas)  # now, not when collected: frees the engine's slots
            plan.stats.observe(self._ctx.metrics, ENDPOINT, status)
        choices = [
            CompletionChoice(
                index=i,
                text=texts[i],
                logprobs=self._logprobs(plan, tokens[i], len(plan.echoes[i])),
                finish_reason=finish[i],
            )
            for i in range(len(plan.specs))
        ]
        return CompletionResponse(
            id=plan.id,
            created=plan.created,
            model=self._ctx.served_model_name,
            choices=choices,
            usage=plan.stats.usage(),
        )

    async def _stream(self, plan: CompletionPlan) -> AsyncIterator[bytes]:
        status = 500
        offsets = [len(echo) for echo in plan.echoes]
        try:
            for i, echo in enumerate(plan.echoes):
                if echo:
                    yield self._event(plan, self._chunk(plan, i, echo, None, None))
            async for delta in self._deltas(plan):
                lp = self._logprobs(plan, delta.tokens, offsets[delta.index])
                offsets[delta.index] += len(delta.text)
                chunk = self._chunk(plan, delta.index, delta.text, lp, delta.finish_reason)
                yield self._event(plan, chunk)
            if plan.include_usage:
                usage_chunk = CompletionResponse(
                    id=plan.id,
                    created=plan.created,
                    model=self._ctx.served_model_name,
                    choices=[],
                    usage=plan.stats.usage(),
                )
                yield event(usage_chunk.to_json())
            status = 200
            yield DONE
        except OpenAIError as exc:
            status = exc.status_code
            yield error_event(exc)
            yield DONE
        finally:
            plan.stats.observe(self._ctx.metrics, ENDPOINT, status)

    def _event(self, plan: CompletionPlan, chunk: CompletionResponse) -> bytes:
        if plan.continuous_usage:
            chunk.usage = plan.stats.usage()
        return event(chunk.to_json())

    def _chunk(
        self, plan: CompletionPlan, index: int, text: str, logprobs: object, finish: str | None
    ) -> CompletionResponse:
        choice = CompletionChoice(
            index=index,
            text=text,
            logprobs=logprobs,
            finish_reason=finish,
        )
        return CompletionResponse(
            id=plan.id, created=plan.created, model=self._ctx.served_model_name, choices=[choice]
        )

    def _logprobs(self, plan: CompletionPlan, tokens: list[TokenEvent], offset: int) -> object:
        if plan.logprobs is None:
            return None
        return completion_logprobs(tokens, self._ctx.token_texts, plan.logprobs, offset)


def _validate(request: CompletionRequest) -> None:
    if request.suffix:
        raise invalid_param("`suffix` is not supported by this model.", "suffix")
    if request.echo and request.logprobs is not None:
        raise invalid_param(
            "`echo` together with `logprobs` is not supported (no prompt logprobs).", "echo"
        )
    if request.best_of is not None and request.best_of != request.n:
        raise invalid_param("`best_of` other than `n` is not supported.", "best_of")


def _requested(request: CompletionRequest) -> RequestedSampling:
    return RequestedSampling(
        temperature=request.temperature,
        top_p=request.top_p,
        top_k=request.top_k,
        seed=request.seed,
        presence_penalty=request.presence_penalty,
        frequency_penalty=request.frequency_penalty,
        repetition_penalty=request.repetition_penalty,
        logprobs=request.logprobs,
        ignore_eos=request.ignore_eos,
        logit_bias=request.logit_bias,
    )


async def _aclose(stream: AsyncIterator[SequenceDelta]) -> None:
    close = getattr(stream, "aclose", None)
    if close is not None:
        await close()
