"""``/v1/score`` (vLLM's shape), and :class:`PairScorer`, which scores (query, document)
pairs for it and for ``/v1/rerank`` (:mod:`aiforge.engines.server.rerank`).

How a pair is scored depends on the model:

* a **reranker** (Qwen3-Reranker) reads the pair as one prompt written as its model card
  says (:mod:`aiforge.models.reranker`) and the engine gives the softmax of "yes" against
  "no" after it (:meth:`~aiforge.engines.core.TokenEngine.score`), in [0, 1];
* an **embedding model** embeds each distinct text once and the score is the cosine
  similarity of the two vectors, in [-1, 1] (vLLM's ``score`` task on embedding models).
  An ``instruction`` is written in front of each query as Qwen3-Embedding's card does
  (``Instruct: …\\nQuery:…``).

A chat model scores nothing: a 400 that names the endpoints it does serve.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from aiforge.engines.server.context import ReplicaContext
from aiforge.models.reranker import PROMPT_PREFIX, PROMPT_SUFFIX, pair_text
from aiforge.protocol.openai.errors import OpenAIError, engine_error, invalid_param
from aiforge.protocol.openai.rerank import (
    MAX_DOCUMENTS,
    ScoreData,
    ScoreRequest,
    ScoreResponse,
    ScoreUsage,
)

__all__ = ["PairScorer", "PairScores", "ScoreService", "embedding_query", "pair_up"]

ENDPOINT = "score"
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class PairScores:
    scores: list[float]
    """One per pair, in pair order."""
    prompt_tokens: int
    """Tokens the model read: every templated pair (reranker), every distinct text (embedding)."""


def pair_up(left: list[str], right: list[str], names: tuple[str, str]) -> list[str]:
    """The left side of each pair: one left text scored against every right one, or two
    lists of the same length paired in order. A 400 naming the parameter otherwise."""
    first, second = names
    if not right:
        raise invalid_param(f"`{second}` must hold at least one text.", second)
    if len(right) > MAX_DOCUMENTS:
        raise invalid_param(f"`{second}` may hold at most {MAX_DOCUMENTS} texts.", second)
    if len(left) == 1:
        return left * len(right)
    if len(left) != len(right):
        raise invalid_param(
            f"`{first}` must be one text or as many texts as `{second}` "
            f"({len(left)} and {len(right)} given).",
            first,
        )
    return left


def embedding_query(query: str, instruction: str | None) -> str:
    """A query as Qwen3-Embedding's card writes it under an instruction (none: as is)."""
    return f"Instruct: {instruction}\nQuery:{query}" if instruction else query


class PairScorer:
    """Scores (query, document) pairs with the replica's model; see the module's contract."""

    def __init__(self, ctx: ReplicaContext) -> None:
        self._ctx = ctx
        self._frame: tuple[list[int], list[int]] | None = None

    def check_serves(self, endpoint: str) -> None:
        """A 400 when the model cannot score pairs (a chat model)."""
        info = self._ctx.engine.info
        if not (info.is_reranker or info.is_embedding):
            raise invalid_param(
                f"The model `{self._ctx.served_model_name}` is a chat model: it serves "
                f"/v1/chat/completions and /v1/completions, not /v1/{endpoint}. Use a reranker "
                "(e.g. demo-reranker, Qwen/Qwen3-Reranker-0.6B) or an embedding model.",
                "model",
                code="model_not_supported",
            )

    async def score(
        self,
        queries: list[str],
        documents: list[str],
        instruction: str | None,
        params: tuple[str, str],
    ) -> PairScores:
        """Score ``queries[i]`` against ``documents[i]`` (equal lengths; ``params`` name the
        two request fields in errors)."""
        ctx = self._ctx
        ctx.limits.check_prompt_chars([*set(queries), *documents, instruction or ""], params[1])
        if ctx.engine.info.is_reranker:
            prompts = await asyncio.to_thread(
                self._reranker_prompts, queries, documents, instruction, params[1]
            )
            scores = await _engine(ctx.engine.score(prompts))
            return PairScores(scores, sum(map(len, prompts)))
        queries = [embedding_query(q, instruction) for q in queries]
        # Each distinct text once, remembering which side it came from for errors.
        sides = {d: params[1] for d in documents} | {q: params[0] for q in queries}
        texts = list(sides)
        inputs = await asyncio.to_thread(self._encode_all, texts, [sides[t] for t in texts])
        vectors = dict(zip(texts, await _engine(ctx.engine.embed(inputs)), strict=True))
        scores = [_dot(vectors[q], vectors[d]) for q, d in zip(queries, documents, strict=True)]
        return PairScores(scores, sum(map(len, inputs)))

    def _reranker_prompts(
        self, queries: list[str], documents: list[str], instruction: str | None, param: str
    ) -> list[list[int]]:
        prefix, suffix = self._template_ids()
        prompts = []
        for i, (query, document) in enumerate(zip(queries, documents, strict=True)):
            body = self._encode(pair_text(query, document, instruction))
            prompts.append(self._fits([*prefix, *body, *suffix], i, param))
        return prompts

    def _template_ids(self) -> tuple[list[int], list[int]]:
        if self._frame is None:
            self._frame = (self._encode(PROMPT_PREFIX), self._encode(PROMPT_SUFFIX))
        return self._frame

    def _encode_all(self, texts: Sequence[str], params: Sequence[str]) -> list[list[int]]:
        encoded = []
        for i, (text, param) in enumerate(zip(texts, params, strict=True)):
            ids = self._encode(text)
            if not ids:
                raise invalid_param(f"`{param}` holds an empty text.", param)
            encoded.append(self._fits(ids, i, param))
        return encoded

    def _encode(self, text: str) -> list[int]:
        return list(self._ctx.tokenizer.encode(text, add_special_tokens=False))

    def _fits(self, ids: list[int], index: int, param: str) -> list[int]:
        limit = self._ctx.max_model_len
        if len(ids) > limit:
            raise invalid_param(
                f"This model's maximum context length is {limit} tokens. However, pair {index} "
                f"has {len(ids)} tokens.",
                param,
                code="context_length_exceeded",
            )
        return ids


async def _engine(work: Awaitable[_T]) -> _T:
    """The engine's answer; its failure (not the client's fault) a 500 saying so."""
    try:
        return await work
    except OpenAIError:
        raise
    except Exception as exc:
        raise engine_error(f"The engine failed to score: {exc}") from exc


def _dot(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity of two unit vectors."""
    return float(sum(x * y for x, y in zip(a, b, strict=True)))


class ScoreService:
    """``POST /v1/score``: vLLM's score API on rerankers and embedding models."""

    def __init__(self, ctx: ReplicaContext, scorer: PairScorer) -> None:
        self._ctx = ctx
        self._scorer = scorer

    async def create(self, request: ScoreRequest) -> ScoreResponse:
        ctx = self._ctx
        ctx.check_model(request.model)
        self._scorer.check_serves(ENDPOINT)
        left, right = request.pairs()
        names = request.field_names()
        queries = pair_up(left, right, names)
        started, status = time.perf_counter(), 500
        tokens = 0
        try:
            scored = await self._scorer.score(queries, right, request.instruction, names)
            status, tokens = 200, scored.prompt_tokens
        except OpenAIError as exc:
            status = exc.status_code
            raise
        finally:
            ctx.metrics.observe_request(
                ENDPOINT, status, prompt_tokens=tokens, latency_s=time.perf_counter() - started
            )
        return ScoreResponse(
            id=f"score-{uuid.uuid4().hex}",
            created=int(time.time()),
            model=ctx.served_model_name,
            data=[ScoreData(index=i, score=s) for i, s in enumerate(scored.scores)],
            usage=ScoreUsage(prompt_tokens=scored.prompt_tokens, total_tokens=scored.prompt_tokens),
        )
