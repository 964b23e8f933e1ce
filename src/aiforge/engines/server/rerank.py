"""``/v1/rerank``: rank documents against a query (the Jina/Cohere shape vLLM serves).

Each document is scored against the query by :class:`~aiforge.engines.server.score.PairScorer`
(a reranker's yes/no relevance, or an embedding model's cosine similarity); the results are
sorted best first (ties keep request order) and cut to ``top_n``.
"""

from __future__ import annotations

import time
import uuid

from aiforge.engines.server.context import ReplicaContext
from aiforge.engines.server.score import PairScorer
from aiforge.protocol.openai.errors import OpenAIError, invalid_param
from aiforge.protocol.openai.rerank import (
    MAX_DOCUMENTS,
    RerankRequest,
    RerankResponse,
    RerankResult,
    RerankResultDocument,
    ScoreUsage,
)

__all__ = ["RerankService", "ranked"]

ENDPOINT = "rerank"


def ranked(
    scores: list[float], texts: list[str], *, top_n: int | None, with_documents: bool
) -> list[RerankResult]:
    """The results, best first (a stable sort: equal scores keep request order), the first
    ``top_n`` of them (None or 0: all)."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    if top_n:
        order = order[:top_n]
    return [
        RerankResult(
            index=i,
            relevance_score=scores[i],
            document=RerankResultDocument(text=texts[i]) if with_documents else None,
        )
        for i in order
    ]


class RerankService:
    """``POST /v1/rerank`` on rerankers and embedding models."""

    def __init__(self, ctx: ReplicaContext, scorer: PairScorer) -> None:
        self._ctx = ctx
        self._scorer = scorer

    async def create(self, request: RerankRequest) -> RerankResponse:
        ctx = self._ctx
        ctx.check_model(request.model)
        self._scorer.check_serves(ENDPOINT)
        texts = request.texts()
        if not texts:
            raise invalid_param("`documents` must hold at least one document.", "documents")
        if len(texts) > MAX_DOCUMENTS:
            raise invalid_param(f"`documents` may hold at most {MAX_DOCUMENTS}.", "documents")
        started, status, tokens = time.perf_counter(), 500, 0
        try:
            scored = await self._scorer.score(
                [request.query] * len(texts), texts, request.instruction, ("query", "documents")
            )
            status, tokens = 200, scored.prompt_tokens
        except OpenAIError as exc:
            status = exc.status_code
            raise
        finally:
            ctx.metrics.observe_request(
                ENDPOINT, status, prompt_tokens=tokens, latency_s=time.perf_counter() - started
            )
        results = ranked(
            scored.scores, texts, top_n=request.top_n, with_documents=request.return_documents
        )
        return RerankResponse(
            id=f"rerank-{uuid.uuid4().hex}",
            model=ctx.served_model_name,
            results=results,
            usage=ScoreUsage(prompt_tokens=scored.prompt_tokens, total_tokens=scored.prompt_tokens),
        )
