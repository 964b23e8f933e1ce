"""``TransformersTokenEngine``: the :class:`~aiforge.engines.core.TokenEngine` on plain
PyTorch/transformers, with continuous batching (chat models), pooled embeddings or
reranker scores.

The async side lives here; the model runs in :class:`EngineLoop`'s thread (generation) or
in a worker thread under a lock (embeddings, scores), so the event loop never blocks on torch.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import torch

from aiforge.engines.core import EngineModelInfo, GenerationRequest, ImagePreprocessor, TokenEvent
from aiforge.engines.prefix_cache import (
    DEFAULT_PREFIX_CACHE_SEQUENCES,
    PrefixCache,
    PrefixCacheStats,
)
from aiforge.engines.transformers.loading import LoadedModel, load_model
from aiforge.engines.transformers.loop import EngineLoop
from aiforge.engines.transformers.relay import EventRelay
from aiforge.engines.transformers.runner import ModelRunner
from aiforge.engines.transformers.scheduler import Scheduler, StopCriteria
from aiforge.engines.transformers.scoring import relevance_batch
from aiforge.engines.transformers.upcast import Float32Linears, upcast_helps
from aiforge.engines.transformers.vision import VisionPrefill

__all__ = ["TransformersTokenEngine"]

_EMBED_BATCH = 16


class TransformersTokenEngine:
    """A loaded HF model serving many requests at once. Build with :meth:`from_pretrained`."""

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        max_num_seqs: int = 8,
        max_prefill_tokens: int = 512,
        prefix_cache_sequences: int = DEFAULT_PREFIX_CACHE_SEQUENCES,
    ) -> None:
        """``prefix_cache_sequences``: finished sequences whose KV stays resident for
        prompts that share their prefix, each one more row of the KV cache; 0 turns
        prefix caching off."""
        self._loaded = loaded
        self._loop: EngineLoop | None = None
        self._embed_lock = threading.Lock()
        self._last_relay: EventRelay | None = None
        if loaded.info.generates:
            cache = None
            if prefix_cache_sequences > 0:
                cache = PrefixCache(max_entries=prefix_cache_sequences)
            scheduler = Scheduler(
                max_num_seqs=max_num_seqs,
                max_prefill_tokens=max_prefill_tokens,
                prefix_cache=cache,
            )
            runner = ModelRunner(
                loaded.model,
                max_num_seqs=max_num_seqs,
                max_model_len=loaded.info.max_model_len,
                max_prefill_tokens=max_prefill_tokens,
                vision=VisionPrefill(loaded.model) if loaded.images is not None else None,
                resident_slots=scheduler.num_slots - max_num_seqs,
            )
            self._loop = EngineLoop(scheduler, runner)
        self._started = False

    @classmethod
    def from_pretrained(
        cls,
        model_dir: Path,
        *,
        dtype: str = "auto",
        max_model_len: int | None = None,
        max_num_seqs: int = 8,
        threads: int | None = None,
        embedding: bool | None = None,
        max_prefill_tokens: int = 512,
        reranker: bool | None = None,
        prefix_cache_sequences: int = DEFAULT_PREFIX_CACHE_SEQUENCES,
    ) -> TransformersTokenEngine:
        """Load ``model_dir`` (blocking; seconds for small models)."""
        loaded = load_model(
            model_dir,
            dtype=dtype,
            max_model_len=max_model_len,
            embedding=embedding,
            threads=threads,
            reranker=reranker,
        )
        return cls(
            loaded,
            max_num_seqs=max_num_seqs,
            max_prefill_tokens=max_prefill_tokens,
            prefix_cache_sequences=prefix_cache_sequences,
        )

    @property
    def info(self) -> EngineModelInfo:
        return self._loaded.info

    @property
    def tokenizer(self) -> object:
        return self._loaded.tokenizer

    @property
    def vision(self) -> ImagePreprocessor | None:
        """The image preprocessor of a vision-language model; None for text-only models."""
        return self._loaded.images

    async def start(self) -> None:
        if self._loop is not None and not self._started:
            self._loop.start()
        self._started = True

    async def shutdown(self) -> None:
        if self._loop is not None and self._started:
            await asyncio.to_thread(self._loop.shutdown)
        self._started = False

    def load(self) -> dict[str, int]:
        return self._loop.load() if self._loop is not None else {"running": 0, "waiting": 0}

    def fatal_error(self) -> str | None:
        return self._loop.fatal_error() if self._loop is not None else None

    def prefix_cache_stats(self) -> PrefixCacheStats | None:
        """The prefix cache's counters (``/metrics``); None when caching is off."""
        return self._loop.prefix_cache_stats() if self._loop is not None else None

    # -- generation ------------------------------------------------------------------------
    def _relay(self, aio_loop: asyncio.AbstractEventLoop) -> EventRelay:
        """The relay into ``aio_loop`` (a server has one loop; a new loop gets a new relay,
        and requests already running keep theirs)."""
        relay = self._last_relay
        if relay is None or relay.loop is not aio_loop:
            relay = self._last_relay = EventRelay(aio_loop)
        return relay

    def _stop_criteria(self, request: GenerationRequest) -> StopCriteria:
        info = self._loaded.info
        stop_ids = set(request.params.stop_token_ids)
        if not request.params.ignore_eos:
            stop_ids |= info.eos_token_ids
        return StopCriteria(request.params.max_tokens, info.max_model_len, frozenset(stop_ids))

    async def generate(self, request: GenerationRequest) -> AsyncIterator[TokenEvent]:
        """Stream the request's tokens; closing the iterator early aborts the request.

        Raises ``ValueError`` for an empty prompt, a prompt of ``max_model_len`` tokens or
        more, or a duplicate request id; ``RuntimeError`` for an embedding model or an
        engine that is not started.
        """
        if self._loop is None or not self._started:
            raise RuntimeError("this engine does not generate (embedding model or not started)")
        n = len(request.prompt_token_ids)
        limit = self._loaded.info.max_model_len
        if n == 0 or n >= limit:
            raise ValueError(f"the prompt has {n} tokens; it must have 1 to {limit - 1}")
        events: asyncio.Queue[TokenEvent | BaseException] = asyncio.Queue()
        relay = self._relay(asyncio.get_running_loop())
        self._loop.submit(request, self._stop_criteria(request), relay.sink(events))
        done = False
        try:
            while True:
                item = await events.get()
                if isinstance(item, BaseException):
                    done = True
                    raise item
                if item.finish_reason is not None:
                    done = True
                yield item
                if done:
                    return
        finally:
            if not done:
                self._loop.abort(request.request_id)

    # -- embeddings --------------------------------------------------------------------------
    async def embed(self, inputs: Sequence[Sequence[int]]) -> list[list[float]]:
        """Last-token pooled, L2-normalised embeddings, one per input, in input order."""
        if not self._loaded.info.is_embedding:
            raise RuntimeError("this model is not an embedding model")
        limit = self._loaded.info.max_model_len
        for ids in inputs:
            if not ids or len(ids) > limit:
                raise ValueError(f"each input must have 1 to {limit} tokens, got {len(ids)}")
        return await asyncio.to_thread(self._embed_sync, [list(ids) for ids in inputs])

    def _embed_sync(self, inputs: list[list[int]]) -> list[list[float]]:
        out: list[list[float]] = []
        # Pooling a whole input is a prefill: compute-bound, so float32 matmuls where faster.
        matmuls = Float32Linears() if upcast_helps(self._loaded.dtype) else contextlib.nullcontext()
        with self._embed_lock, torch.inference_mode(), matmuls:
            for start in range(0, len(inputs), _EMBED_BATCH):
                out.extend(self._embed_batch(inputs[start : start + _EMBED_BATCH]))
        return out

    def _embed_batch(self, batch: list[list[int]]) -> list[list[float]]:
        # Right padding: under a causal mask no real token sees a pad, so each row's last
        # real hidden state equals the one it gets alone.
        width = max(len(ids) for ids in batch)
        input_ids = torch.zeros((len(batch), width), dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, ids in enumerate(batch):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            mask[i, : len(ids)] = 1
        hidden = self._loaded.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
        last = torch.tensor([len(ids) - 1 for ids in batch])
        pooled = hidden[torch.arange(len(batch)), last].to(torch.float32)
        pooled = torch.nn.functional.normalize(pooled, p=2, dim=-1)
        vectors: list[list[float]] = pooled.tolist()
        return vectors

    # -- reranking ---------------------------------------------------------------------------
    async def score(self, prompts: Sequence[Sequence[int]]) -> list[float]:
        """Each templated pair's relevance (yes vs no), in input order, batched like
        embeddings: in a worker thread, one batch at a time under the engine's lock."""
        token_ids = self._loaded.info.classifier_token_ids
        if token_ids is None:
            raise RuntimeError("this model is not a reranker")
        limit = self._loaded.info.max_model_len
        for ids in prompts:
            if not ids or len(ids) > limit:
                raise ValueError(f"each prompt must have 1 to {limit} tokens, got {len(ids)}")
        batch = [list(ids) for ids in prompts]
        return await asyncio.to_thread(self._score_sync, batch, token_ids)

    def _score_sync(self, prompts: list[list[int]], token_ids: tuple[int, int]) -> list[float]:
        out: list[float] = []
        matmuls = Float32Linears() if upcast_helps(self._loaded.dtype) else contextlib.nullcontext()
        with self._embed_lock, torch.inference_mode(), matmuls:
            for start in range(0, len(prompts), _EMBED_BATCH):
                chunk = prompts[start : start + _EMBED_BATCH]
                out.extend(relevance_batch(self._loaded.model, chunk, token_ids))
        return out
