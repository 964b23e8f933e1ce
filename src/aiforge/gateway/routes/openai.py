"""The public OpenAI API: inference routes proxied to replicas, and the model list."""

from __future__ import annotations

import time

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from aiforge.gateway.errors import model_not_found
from aiforge.gateway.handler import OpenAIHandler
from aiforge.gateway.routes.schema import openapi_body
from aiforge.protocol.openai.chat import ChatCompletionRequest
from aiforge.protocol.openai.completions import CompletionRequest
from aiforge.protocol.openai.embeddings import EmbeddingRequest

router = APIRouter(tags=["OpenAI"])

_STARTED = int(time.time())


def _handler(request: Request) -> OpenAIHandler:
    handler: OpenAIHandler = request.app.state.handler
    return handler


@router.post(
    "/v1/chat/completions",
    summary="Create a chat completion (OpenAI)",
    openapi_extra=openapi_body(ChatCompletionRequest),
)
async def chat_completions(request: Request) -> Response:
    return await _handler(request).handle(request, "chat", "/v1/chat/completions")


@router.post(
    "/v1/completions",
    summary="Create a completion (OpenAI)",
    openapi_extra=openapi_body(CompletionRequest),
)
async def completions(request: Request) -> Response:
    return await _handler(request).handle(request, "completion", "/v1/completions")


@router.post(
    "/v1/embeddings",
    summary="Create embeddings (OpenAI)",
    openapi_extra=openapi_body(EmbeddingRequest),
)
async def embeddings(request: Request) -> Response:
    return await _handler(request).handle(request, "embedding", "/v1/embeddings")


def _model_card(model: str) -> dict[str, object]:
    return {"id": model, "object": "model", "created": _STARTED, "owned_by": "aiforge"}


def _visible_models(request: Request) -> list[str]:
    handler = _handler(request)
    return handler.visible_models(handler.authenticate(request))


@router.get("/v1/models", summary="List the models served here (OpenAI)")
async def list_models(request: Request) -> Response:
    cards = [_model_card(m) for m in _visible_models(request)]
    return Response(orjson.dumps({"object": "list", "data": cards}), media_type="application/json")


@router.get("/v1/models/{model:path}", summary="Retrieve one model (OpenAI)")
async def retrieve_model(model: str, request: Request) -> Response:
    if model not in _visible_models(request):
        raise model_not_found(model)
    return Response(orjson.dumps(_model_card(model)), media_type="application/json")
