"""The replica's FastAPI app: thin routes over the handlers kept on ``app.state``.

A request whose client (the gateway) disconnects is aborted in the engine, whatever its
kind: a stream when Starlette stops iterating it (closing the generators closes the engine's
streams), a non-streamed answer by :func:`_answer` (vLLM's ``with_cancellation``), which
cancels the work when ``http.disconnect`` arrives, so the batch slot is freed at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any, Literal

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aiforge.engines.server.chat import ChatService
from aiforge.engines.server.completions import CompletionService
from aiforge.engines.server.context import ReplicaContext
from aiforge.engines.server.embeddings import EmbeddingService
from aiforge.engines.server.errors import BodySizeLimit, install_error_handlers
from aiforge.engines.server.generation import CLIENT_CLOSED_STATUS
from aiforge.engines.server.rerank import RerankService
from aiforge.engines.server.score import PairScorer, ScoreService
from aiforge.protocol.openai.chat import ChatCompletionRequest
from aiforge.protocol.openai.completions import CompletionRequest
from aiforge.protocol.openai.embeddings import EmbeddingRequest
from aiforge.protocol.openai.errors import engine_error, invalid_param
from aiforge.protocol.openai.models import ModelCard, ModelList
from aiforge.protocol.openai.rerank import RerankRequest, ScoreRequest

router = APIRouter()

_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _context(request: Request) -> ReplicaContext:
    """The replica's context; a 503 at once when the engine cannot serve (not started, or
    its loop has died), so no request hangs on a dead engine."""
    ctx: ReplicaContext = request.app.state.ctx
    if not request.app.state.ready:
        raise engine_error("The engine is not running.", unavailable=True)
    fatal = ctx.engine.fatal_error()
    if fatal is not None:
        raise engine_error(f"The engine is down: {fatal}", unavailable=True)
    return ctx


def _respond(result: object) -> Response:
    if isinstance(result, AsyncIterator):
        return StreamingResponse(result, media_type="text/event-stream", headers=_SSE_HEADERS)
    return Response(result.to_json(), media_type="application/json")  # type: ignore[attr-defined]


async def _answer(request: Request, work: Coroutine[Any, Any, object]) -> Response:
    """The response of ``work`` (a service's ``create``), unless the client disconnects
    first: then ``work`` is cancelled — its sequences' engine streams are closed, which
    aborts them in the engine — and the answer nobody reads is a bare 499."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_client_left(request))
    try:
        await asyncio.wait((task, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not task.done():
            task.cancel()
        await asyncio.gather(task, gone, return_exceptions=True)
    if task.cancelled():
        return Response(status_code=CLIENT_CLOSED_STATUS)
    return _respond(task.result())


async def _client_left(request: Request) -> None:
    """Returns when ``http.disconnect`` arrives (the body has been read already)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _generative(ctx: ReplicaContext, endpoint: str) -> None:
    """A 400 for a generation request to a model that only pools or scores."""
    info = ctx.engine.info
    if info.generates:
        return
    kind, serves = (
        ("a reranker", "/v1/rerank and /v1/score")
        if info.is_reranker
        else ("an embedding model", "/v1/embeddings, /v1/score and /v1/rerank")
    )
    raise invalid_param(
        f"The model `{ctx.served_model_name}` is {kind}: it serves {serves}, not {endpoint}.",
        "model",
        code="model_not_supported",
    )


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
    _generative(_context(request), "/v1/chat/completions")
    return await _answer(request, request.app.state.chat.create(body))


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request) -> Response:
    _generative(_context(request), "/v1/completions")
    return await _answer(request, request.app.state.completions.create(body))


@router.post("/v1/embeddings")
async def embeddings(body: EmbeddingRequest, request: Request) -> Response:
    _context(request)
    return await _answer(request, request.app.state.embeddings.create(body))


# vLLM serves these at /rerank and /score (its /v1 paths log a deprecation on every call),
# and the gateway forwards there; both spellings answer here.
@router.post("/v1/rerank")
@router.post("/rerank")
async def rerank(body: RerankRequest, request: Request) -> Response:
    _context(request)
    return await _answer(request, request.app.state.rerank.create(body))


@router.post("/v1/score")
@router.post("/score")
async def score(body: ScoreRequest, request: Request) -> Response:
    _context(request)
    return await _answer(request, request.app.state.score.create(body))


@router.get("/v1/models")
async def models(request: Request) -> Response:
    ctx: ReplicaContext = request.app.state.ctx
    card = ModelCard(
        id=ctx.served_model_name,
        created=ctx.created,
        owned_by="aiforge",
        max_model_len=ctx.max_model_len,
        task=_task(ctx),
    )
    return Response(ModelList(data=[card]).to_json(), media_type="application/json")


def _task(ctx: ReplicaContext) -> Literal["chat", "embedding", "rerank"]:
    info = ctx.engine.info
    return "rerank" if info.is_reranker else "embedding" if info.is_embedding else "chat"


@router.get("/health")
async def health(request: Request) -> Response:
    """200 while the replica serves; 503 while it starts, and for good once its engine loop
    has died (the controller then replaces the replica)."""
    if not request.app.state.ready:
        return JSONResponse({"status": "starting"}, status_code=503)
    ctx: ReplicaContext = request.app.state.ctx
    fatal = ctx.engine.fatal_error()
    if fatal is not None:
        return JSONResponse({"status": "failed", "reason": fatal}, status_code=503)
    return JSONResponse({"status": "ok"})


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    ctx: ReplicaContext = request.app.state.ctx
    return Response(ctx.metrics.render(), media_type="text/plain; version=0.0.4")


class EchoRequestId:
    """Answers a request that carries ``x-request-id`` with the same header, so the caller
    (the gateway) and the replica's logs name a request alike. Pure ASGI: nearly free."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = None
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"x-request-id":
                    request_id = value
                    break
        if request_id is None:
            await self.app(scope, receive, send)
            return
        header = (b"x-request-id", request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        await self.app(scope, receive, send_with_id)


def create_replica_app(ctx: ReplicaContext, *, max_body_bytes: int = 8 * 1024 * 1024) -> FastAPI:
    """The app serving ``ctx.engine``. Its lifespan starts the engine and shuts it down."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await ctx.engine.start()
        app.state.ready = True
        try:
            yield
        finally:
            app.state.ready = False
            await ctx.engine.shutdown()

    app = FastAPI(title="aiforge replica", lifespan=lifespan)
    app.state.ctx = ctx
    app.state.ready = False
    app.state.chat = ChatService(ctx)
    app.state.completions = CompletionService(ctx)
    app.state.embeddings = EmbeddingService(ctx)
    scorer = PairScorer(ctx)
    app.state.rerank = RerankService(ctx, scorer)
    app.state.score = ScoreService(ctx, scorer)
    install_error_handlers(app)
    app.include_router(router)
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    app.add_middleware(EchoRequestId)
    return app
