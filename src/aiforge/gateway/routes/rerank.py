"""``/v1/rerank`` and ``/v1/score``: proxied to the deployment's replicas like embeddings.

Not OpenAI endpoints (the shapes vLLM and Xinference serve, :mod:`aiforge.protocol.openai.rerank`),
so no OpenAI client has a method for them: ``client.post("/rerank", ...)`` with the openai
client, or any HTTP client. Replicas are asked at ``/rerank`` and ``/score``, the paths
vLLM serves them at without a deprecation warning (aiforge's replica server answers both).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from aiforge.gateway.handler import OpenAIHandler
from aiforge.gateway.routes.schema import openapi_body
from aiforge.protocol.openai.rerank import RerankRequest, ScoreRequest

router = APIRouter(tags=["Rerank and score"])

REPLICA_RERANK_PATH = "/rerank"
REPLICA_SCORE_PATH = "/score"


def _handler(request: Request) -> OpenAIHandler:
    handler: OpenAIHandler = request.app.state.handler
    return handler


@router.post(
    "/v1/rerank",
    summary="Rank documents by relevance to a query (Jina/Cohere shape, as vLLM serves it)",
    openapi_extra=openapi_body(RerankRequest),
)
async def rerank(request: Request) -> Response:
    return await _handler(request).handle(request, "rerank", REPLICA_RERANK_PATH)


@router.post(
    "/v1/score",
    summary="Score text pairs (vLLM's score API)",
    openapi_extra=openapi_body(ScoreRequest),
)
async def score(request: Request) -> Response:
    return await _handler(request).handle(request, "score", REPLICA_SCORE_PATH)
