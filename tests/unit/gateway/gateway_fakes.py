"""A scriptable fake replica (a real HTTP server), fakes of the platform seams, and the
``gateway`` fixture (re-exported by conftest.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse

from aiforge.config import Settings
from aiforge.gateway.app import create_app
from aiforge.gateway.front.protocol import front_protocol
from aiforge.gateway.request_id import InferenceFastPath
from aiforge.testing.fleet import StaticFleet
from aiforge.testing.server import running_app
from aiforge.types import AuthError, LimitExceeded, Principal, Ticket, UsageEvent

MODEL = "tiny"
KEY = "sk-good"
PRINCIPAL = Principal(key_id="k1", project_id="p1", organization_id="o1", role="member")


def fake_replica(name: str = "r") -> FastAPI:
    """Streams one chunk per word of ``prompt`` (completions-style text) with ``delay_s``."""
    app = FastAPI()
    app.state.bodies = []
    app.state.request_ids = []
    app.state.left = []
    """Request ids whose connection closed while the replica worked on them (``head_delay_s``)."""

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body = orjson.loads(await request.body())
        app.state.bodies.append(body)
        app.state.request_ids.append(request.headers.get("x-request-id"))
        if body.get("messages") == "fail":
            error = {"error": {"message": "bad messages", "type": "invalid_request_error",
                               "param": "messages", "code": None}}  # fmt: skip
            return Response(orjson.dumps(error), status_code=400, media_type="application/json")
        words = str(body.get("prompt", "hello world")).split()
        delay = float(body.get("delay_s", 0.0))
        usage = {
            "prompt_tokens": 7,
            "completion_tokens": len(words),
            "total_tokens": 7 + len(words),
        }
        head_delay = float(body.get("head_delay_s", 0.0))
        if head_delay:  # works before the head, as a real replica's non-streamed answer does
            until = asyncio.get_running_loop().time() + head_delay
            while asyncio.get_running_loop().time() < until:
                if await request.is_disconnected():
                    app.state.left.append(request.headers.get("x-request-id"))
                    return Response(status_code=499)
                await asyncio.sleep(0.02)
        if not body.get("stream"):
            message = {"role": "assistant", "content": " ".join(words)}
            out = {"id": "c1", "object": "chat.completion", "created": 1, "model": body["model"],
                   "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                   "usage": usage, "served_by": name}  # fmt: skip
            if not delay:
                return Response(orjson.dumps(out), media_type="application/json")

            async def slow_body() -> AsyncIterator[bytes]:  # the head now, the body later
                await asyncio.sleep(delay * len(words))
                yield orjson.dumps(out)

            return StreamingResponse(slow_body(), media_type="application/json")
        options = body.get("stream_options") or {}
        include = options.get("include_usage") is True
        continuous = include and options.get("continuous_usage_stats") is True

        def so_far(sent: int) -> dict[str, Any]:
            return {"usage": {**usage, "completion_tokens": sent, "total_tokens": 7 + sent}}

        async def events() -> AsyncIterator[bytes]:
            base = {"id": "c1", "object": "chat.completion.chunk", "created": 1,
                    "model": body["model"]}  # fmt: skip
            role = {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                         "finish_reason": None}]}  # fmt: skip
            if continuous:
                role |= so_far(0)
            yield b"data: " + orjson.dumps(role) + b"\n\n"
            for sent, word in enumerate(words, start=1):
                await asyncio.sleep(delay)
                chunk = {**base, "choices": [{"index": 0, "delta": {"content": word + " "},
                                              "finish_reason": None}]}  # fmt: skip
                if continuous:
                    chunk |= so_far(sent)
                yield b"data: " + orjson.dumps(chunk) + b"\n\n"
            if include:
                yield b"data: " + orjson.dumps({**base, "choices": [], "usage": usage}) + b"\n\n"
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> Response:
        body = orjson.loads(await request.body())
        app.state.bodies.append(body)
        out = {"object": "list", "model": body["model"],
               "data": [{"object": "embedding", "index": 0, "embedding": [0.0, 1.0]}],
               "usage": {"prompt_tokens": 3, "total_tokens": 3}}  # fmt: skip
        return Response(orjson.dumps(out), media_type="application/json")

    return app


class KeyAuth:
    def __init__(self, principals: dict[str, Principal]) -> None:
        self.principals = principals

    def authenticate(self, authorization: str | None) -> Principal:
        if not authorization or not authorization.startswith("Bearer "):
            raise AuthError("Missing API key.")
        principal = self.principals.get(authorization.removeprefix("Bearer "))
        if principal is None:
            raise AuthError("Incorrect API key provided.")
        return principal


@dataclass
class RecordingAdmission:
    refuse: LimitExceeded | None = None
    admitted: list[tuple[str, int]] = field(default_factory=list)
    settled: list[tuple[Ticket, int]] = field(default_factory=list)

    async def admit(self, principal: Principal, model: str, estimated_tokens: int) -> Ticket:
        if self.refuse is not None:
            raise self.refuse
        self.admitted.append((model, estimated_tokens))
        return Ticket(principal=principal, model=model, reserved_tokens=estimated_tokens)

    async def settle(self, ticket: Ticket, actual_tokens: int) -> None:
        self.settled.append((ticket, actual_tokens))


@dataclass
class RecordingUsage:
    events: list[UsageEvent] = field(default_factory=list)
    opened: list[UsageEvent] = field(default_factory=list)

    def open(self, provisional: UsageEvent) -> None:
        self.opened.append(provisional)

    def record(self, event: UsageEvent) -> None:
        self.events.append(event)

    async def wait_for(self, count: int, timeout_s: float = 5.0) -> list[UsageEvent]:
        for _ in range(int(timeout_s / 0.01)):
            if len(self.events) >= count:
                break
            await asyncio.sleep(0.01)
        return self.events


@dataclass
class Gateway:
    url: str
    app: FastAPI
    fleet: StaticFleet
    fleet_url: str
    """The URL of the fake replica ``r0``."""
    replica_app: FastAPI
    admission: RecordingAdmission
    usage: RecordingUsage
    headers: dict[str, str] = field(default_factory=lambda: {"authorization": f"Bearer {KEY}"})


@pytest.fixture
async def gateway(tmp_path: Any) -> AsyncIterator[Gateway]:
    replica_app = fake_replica()
    async with running_app(replica_app) as replica_url:
        fleet = StaticFleet()
        fleet.add(MODEL, "r0", replica_url)
        admission, usage = RecordingAdmission(), RecordingUsage()
        settings = Settings(data_dir=tmp_path, max_body_bytes=4096)
        app = create_app(settings, directory=fleet.directory, fleet_status=fleet.status,
                         authenticator=KeyAuth({KEY: PRINCIPAL}),
                         admission=admission, usage_sink=usage)  # fmt: skip
        front = front_protocol(app.state.handler, max_body_bytes=settings.max_body_bytes)
        async with running_app(InferenceFastPath(app), http=front) as url:
            yield Gateway(url=url, app=app, fleet=fleet, fleet_url=replica_url,
                          replica_app=replica_app, admission=admission, usage=usage)  # fmt: skip
