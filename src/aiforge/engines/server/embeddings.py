"""``/v1/embeddings`` for embedding models (pooling and normalisation are the engine's)."""

from __future__ import annotations

import asyncio
import base64
import math
import struct
import time

from aiforge.engines.server.context import ReplicaContext
from aiforge.engines.server.params import as_batch
from aiforge.protocol.openai.embeddings import (
    Embedding,
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingUsage,
)
from aiforge.protocol.openai.errors import OpenAIError, engine_error, invalid_param

ENDPOINT = "embeddings"
MAX_INPUTS = 2048


class EmbeddingService:
    def __init__(self, ctx: ReplicaContext) -> None:
        self._ctx = ctx

    async def create(self, request: EmbeddingRequest) -> EmbeddingResponse:
        ctx = self._ctx
        ctx.check_model(request.model)
        info = ctx.engine.info
        if not info.is_embedding:
            raise invalid_param(
                f"The model `{ctx.served_model_name}` is not an embedding model: serve one for "
                "/v1/embeddings, e.g. `aiforge serve --model demo-embedding` (offline) or "
                "Qwen/Qwen3-Embedding-0.6B.",
                "model",
                code="model_not_supported",
            )
        dim = info.embedding_dim
        if request.dimensions is not None and dim is not None and request.dimensions > dim:
            raise invalid_param(f"`dimensions` must be at most {dim}.", "dimensions")
        items = as_batch(request.input)
        if not items or len(items) > MAX_INPUTS:
            raise invalid_param(f"`input` must hold 1 to {MAX_INPUTS} items.", "input")
        ctx.limits.check_prompt_chars((i for i in items if isinstance(i, str)), "input")
        # Tokenizing a big request takes seconds: never on the event loop.
        inputs = await asyncio.to_thread(self._inputs, items)
        started = time.perf_counter()
        status = 500
        try:
            vectors = await ctx.engine.embed(inputs)
            status = 200
        except OpenAIError:
            raise
        except Exception as exc:
            raise engine_error(f"The engine failed to embed: {exc}") from exc
        finally:
            ctx.metrics.observe_request(
                ENDPOINT,
                status,
                prompt_tokens=sum(map(len, inputs)),
                latency_s=time.perf_counter() - started,
            )
        data = [
            Embedding(index=i, embedding=_encode(_truncate(v, request.dimensions), request))
            for i, v in enumerate(vectors)
        ]
        tokens = sum(map(len, inputs))
        return EmbeddingResponse(
            data=data,
            model=ctx.served_model_name,
            usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens),
        )

    def _inputs(self, items: list[str | list[int]]) -> list[list[int]]:
        """Each input's token ids, checked against the vocabulary and the context."""
        limit = self._ctx.max_model_len
        vocab = self._ctx.engine.info.vocab_size
        encoded = []
        for i, item in enumerate(items):
            ids = list(self._ctx.tokenizer.encode(item)) if isinstance(item, str) else list(item)
            if not ids:
                raise invalid_param(f"`input[{i}]` is empty.", "input")
            if any(not 0 <= t < vocab for t in ids):
                raise invalid_param(f"Token ids must be in [0, {vocab}).", "input")
            if len(ids) > limit:
                raise invalid_param(
                    f"This model's maximum context length is {limit} tokens. However, input "
                    f"{i} has {len(ids)} tokens.",
                    "input",
                    code="context_length_exceeded",
                )
            encoded.append(ids)
        return encoded


def _truncate(vector: list[float], dimensions: int | None) -> list[float]:
    """Matryoshka truncation (Qwen3-Embedding supports it), renormalised to unit length."""
    if dimensions is None or dimensions >= len(vector):
        return vector
    head = vector[:dimensions]
    norm = math.sqrt(sum(x * x for x in head)) or 1.0
    return [x / norm for x in head]


def _encode(vector: list[float], request: EmbeddingRequest) -> list[float] | str:
    if request.encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector
