"""A non-streamed request whose client disconnects is aborted in the engine (issue 7, item 8).

Driven at the ASGI level, so the client's ``http.disconnect`` arrives exactly when the test
says, as uvicorn delivers it when the gateway closes its connection.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from starlette.types import Message
from transformers import PreTrainedTokenizerBase

from aiforge.engines.server.app import create_replica_app
from aiforge.engines.server.context import ReplicaContext
from aiforge.engines.server.limits import RequestLimits
from aiforge.engines.server.metrics import ReplicaMetrics
from aiforge.testing.fake_engine import FakeTokenEngine, text_script

MODEL = "qwen3-test"


def _bodies() -> dict[str, dict[str, Any]]:
    return {
        "/v1/chat/completions": {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]},
        "/v1/completions": {"model": MODEL, "prompt": "Hi", "n": 2},
    }


@pytest.mark.parametrize("path", sorted(_bodies()))
async def test_disconnect_aborts_a_non_streamed_request(
    tokenizer: PreTrainedTokenizerBase, path: str
) -> None:
    engine = FakeTokenEngine(script=text_script(tokenizer, "word " * 500), token_delay_s=0.01)
    ctx = ReplicaContext(
        engine=engine,
        tokenizer=tokenizer,
        served_model_name=MODEL,
        max_model_len=engine.info.max_model_len,
        metrics=ReplicaMetrics(MODEL, engine.load),
        limits=RequestLimits(),
    )
    app = create_replica_app(ctx)
    body = json.dumps(_bodies()[path]).encode()
    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
        "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(),
        "query_string": b"", "root_path": "", "server": ("replica", 80), "client": ("gw", 1),
        "headers": [(b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode())],
    }  # fmt: skip
    left = asyncio.Event()
    messages: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> Message:
        if messages:
            return messages.pop(0)
        await left.wait()
        return {"type": "http.disconnect"}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async with app.router.lifespan_context(app):
        answering = asyncio.create_task(app(scope, receive, send))
        for _ in range(200):
            if engine.running:
                break
            await asyncio.sleep(0.01)
        assert engine.running, "the engine never started on the request"
        await asyncio.sleep(0.05)  # a few tokens in
        left.set()
        await asyncio.wait_for(answering, timeout=2.0)
    assert engine.running == 0
    assert len(engine.aborted) == len(engine.requests) >= 1
    metrics = ctx.metrics.render()
    assert b'status="499"' in metrics
