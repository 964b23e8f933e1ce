"""A fake OpenAI server that answers at a known pace: the reference ``aiforge bench`` is
tested against, and a way to try the bench without a model.

Every completion (chat or text, streamed or not) produces ``max_tokens`` tokens (default
:attr:`Pace.default_tokens`): the first after ``ttft_s``, each next one ``itl_s`` later,
one token per chunk, then a usage chunk when ``stream_options.include_usage`` asks for
one. Every ``fail_every``-th request (counting from 1) answers 500 in OpenAI's error
envelope instead. A client measuring this server should therefore see TTFT ≈ ``ttft_s``,
ITL ≈ ``itl_s`` and E2E ≈ ``ttft_s + (tokens - 1) * itl_s``.

:func:`serving_in_thread` runs an app with uvicorn on its own thread and event loop, so
the client under test keeps its loop to itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

__all__ = ["Pace", "paced_openai_app", "serving_in_thread"]

MODEL = "paced"
TOKEN = " tok"


@dataclass
class Pace:
    """How the fake answers; ``requests`` counts the completions it received."""

    ttft_s: float = 0.1
    itl_s: float = 0.01
    default_tokens: int = 16
    fail_every: int = 0
    requests: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def next_fails(self) -> bool:
        """Count a request; True when this one must fail."""
        with self._lock:
            self.requests += 1
            return self.fail_every > 0 and self.requests % self.fail_every == 0


def _usage(prompt: Any, tokens: int) -> dict[str, int]:
    prompt_tokens = len(json.dumps(prompt).split())
    return {"prompt_tokens": prompt_tokens, "completion_tokens": tokens,
            "total_tokens": prompt_tokens + tokens}  # fmt: skip


def _choice(chat: bool, text: str, finish: str | None, *, whole: bool = False) -> dict[str, Any]:
    if not chat:
        return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
    key, body = ("message", {"role": "assistant", "content": text}) if whole else (
        "delta", {"content": text} if text else {})  # fmt: skip
    return {"index": 0, key: body, "logprobs": None, "finish_reason": finish}


async def _stream(
    pace: Pace, chat: bool, tokens: int, usage: dict[str, int] | None
) -> AsyncIterator[bytes]:
    kind = "chat.completion.chunk" if chat else "text_completion"
    head = {"id": "cmpl-paced", "object": kind, "created": int(time.time()), "model": MODEL}

    def event(payload: dict[str, Any]) -> bytes:
        return f"data: {json.dumps({**head, **payload})}\n\n".encode()

    await asyncio.sleep(pace.ttft_s)
    for index in range(tokens):
        if index:
            await asyncio.sleep(pace.itl_s)
        yield event({"choices": [_choice(chat, TOKEN, None)]})
    yield event({"choices": [_choice(chat, "", "length")]})
    if usage is not None:
        yield event({"choices": [], "usage": usage})
    yield b"data: [DONE]\n\n"


def paced_openai_app(pace: Pace) -> FastAPI:
    """The fake server's app: ``/v1/models``, ``/v1/chat/completions``, ``/v1/completions``."""
    app = FastAPI()

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "fake"}]}

    async def complete(request: Request, chat: bool) -> Response:
        body = await request.json()
        if pace.next_fails():
            error = {"message": "paced fake: planned failure", "type": "server_error",
                     "param": None, "code": None}  # fmt: skip
            return JSONResponse({"error": error}, status_code=500)
        tokens = int(body.get("max_tokens") or pace.default_tokens)
        usage = _usage(body.get("messages") or body.get("prompt"), tokens)
        if body.get("stream"):
            wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            chunks = _stream(pace, chat, tokens, usage if wants_usage else None)
            return StreamingResponse(chunks, media_type="text/event-stream")
        await asyncio.sleep(pace.ttft_s + (tokens - 1) * pace.itl_s)
        return JSONResponse({
            "id": "cmpl-paced", "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()), "model": MODEL,
            "choices": [_choice(chat, TOKEN * tokens, "length", whole=True)], "usage": usage,
        })  # fmt: skip

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await complete(request, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await complete(request, chat=False)

    return app


@contextlib.contextmanager
def serving_in_thread(app: Any, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve ``app`` with uvicorn on a thread of its own; yields its base URL (no
    ``/v1``) once it accepts connections, and stops it on exit."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))  # bound here: no race for the port
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="paced-openai-server", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + 30.0
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the fake server did not start")
            time.sleep(0.02)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30.0)
        sock.close()
