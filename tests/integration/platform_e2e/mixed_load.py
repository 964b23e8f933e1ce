"""The mixed client load of the "never lose a usage record" test, and its client-side log.

Every logical request is sent by one of several sequential workers (one API key each) and
retried while the gateway is down. Each try is an :class:`Attempt` carrying the
``x-request-id`` the gateway answered with (the ledger row's ``request_id``) when the client
got response headers, and the wall-clock interval in which it was in flight: a try cut
before any headers (the gateway was killed) has no id, but the gateway stamps
``started_at`` inside that interval and a worker's tries never overlap, so its row (if any)
still maps to exactly one try by (key, ``started_at``).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
from platform_e2e_support import CHAT_MODEL, EMBED_MODEL

from aiforge.testing.load import StreamTally, read_stream

Kind = Literal[
    "chat",
    "chat_stream_usage",
    "chat_stream_bare",
    "completion",
    "completion_stream_usage",
    "chat_cancelled",
    "embedding",
    "replica_error",
    "unknown_model",
]
MIX: tuple[Kind, ...] = (
    "chat", "chat_stream_usage", "chat_stream_bare", "completion", "completion_stream_usage",
    "chat_cancelled", "embedding", "chat_stream_bare", "replica_error", "unknown_model",
)  # fmt: skip
PROMPTS = ("hello", "count to three", "what is a replica?", "write one word")
MAX_TOKENS = 4
CANCELLED_MAX_TOKENS = 64
CHARS_PER_TOKEN = 4
"""The gateway's prompt estimate (``gateway.request``): the prompt of a crash record."""

Outcome = Literal["answered", "unreached", "cut"]
"""answered: the client got a whole answer (or hung up on purpose); unreached: no connection
to the gateway; cut: the connection broke mid-request (the gateway was killed)."""


@dataclass(frozen=True)
class LogicalRequest:
    index: int
    kind: Kind
    path: str
    body: bytes
    prompt: str
    streamed: bool

    @property
    def estimated_prompt_tokens(self) -> int:
        return math.ceil(len(self.body) / CHARS_PER_TOKEN)


@dataclass
class Attempt:
    request: LogicalRequest
    key_id: str
    sent_at: float
    done_at: float = 0.0
    outcome: Outcome = "cut"
    status: int = 0
    body: dict[str, Any] | None = None
    tally: StreamTally | None = None
    hung_up: bool = False
    request_id: str | None = None
    """The gateway's ``x-request-id`` (None when the try got no response headers)."""


def build_request(index: int) -> LogicalRequest:
    """The ``index``-th request of the mix (pure)."""
    kind = MIX[index % len(MIX)]
    prompt = PROMPTS[index % len(PROMPTS)]
    messages = [{"role": "user", "content": prompt}]
    path = "/v1/chat/completions"
    body: dict[str, Any] = {"model": CHAT_MODEL, "messages": messages}
    body["max_tokens"] = MAX_TOKENS
    if kind in ("chat_stream_usage", "chat_stream_bare", "chat_cancelled"):
        body["stream"] = True
    if kind == "chat_stream_usage":
        body["stream_options"] = {"include_usage": True}
    if kind == "chat_stream_bare":
        body["logprobs"] = True  # one logprobs entry per token: the client's exact count
    if kind == "chat_cancelled":
        body["max_tokens"] = CANCELLED_MAX_TOKENS
    if kind in ("completion", "completion_stream_usage"):
        path, body = "/v1/completions", {"model": CHAT_MODEL, "prompt": prompt, "max_tokens": 4}
    if kind == "completion_stream_usage":
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    if kind == "embedding":
        path, body = "/v1/embeddings", {"model": EMBED_MODEL, "input": [prompt, prompt[::-1]]}
    if kind == "replica_error":
        body["top_logprobs"] = 2  # without logprobs: the replica answers 400
    if kind == "unknown_model":
        body["model"] = "no-such-model"  # the gateway answers 404 itself
    streamed = body.get("stream") is True
    return LogicalRequest(index, kind, path, json.dumps(body).encode(), prompt, streamed)


async def send_once(client: httpx.AsyncClient, attempt: Attempt) -> None:
    """One try; fills in the attempt's outcome and what the client received."""
    request = attempt.request
    try:
        if request.streamed:
            await _send_streamed(client, attempt)
        else:
            response = await client.post(request.path, content=request.body)
            attempt.request_id = response.headers.get("x-request-id")
            attempt.status, attempt.body = response.status_code, response.json()
            attempt.outcome = "answered"
    except httpx.ConnectError:
        attempt.outcome = "unreached"
    except httpx.TransportError:
        attempt.outcome = "cut"
    finally:
        attempt.done_at = time.time()


async def _send_streamed(client: httpx.AsyncClient, attempt: Attempt) -> None:
    request = attempt.request
    hang_up = request.kind == "chat_cancelled"
    async with client.stream("POST", request.path, content=request.body) as response:
        attempt.request_id = response.headers.get("x-request-id")
        attempt.status = response.status_code
        if response.status_code != 200:
            attempt.body = json.loads(await response.aread())
            attempt.outcome = "answered"
            return
        attempt.tally, attempt.hung_up = await read_stream(response, hang_up_after_content=hang_up)
    if attempt.hung_up or attempt.tally.done:
        attempt.outcome = "answered"


@dataclass
class LoadLog:
    """Every try of every worker, and how far the load had got."""

    attempts: list[Attempt] = field(default_factory=list)
    finished_requests: int = 0
    milestone: int = 0
    reached: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when ``milestone`` requests have finished."""

    def finished(self) -> None:
        self.finished_requests += 1
        if self.finished_requests >= self.milestone:
            self.reached.set()


async def run_worker(
    base_url: str,
    key: dict[str, Any],
    indexes: list[int],
    log: LoadLog,
    *,
    retry_for_s: float = 120.0,
) -> None:
    """Send ``indexes`` one after another with this key, retrying a request until answered."""
    headers = {"Authorization": f"Bearer {key['key']}", "content-type": "application/json"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60.0) as client:
        for index in indexes:
            request = build_request(index)
            deadline = time.monotonic() + retry_for_s
            while True:
                attempt = Attempt(request, key_id=str(key["id"]), sent_at=time.time())
                log.attempts.append(attempt)
                await send_once(client, attempt)
                if attempt.outcome == "answered":
                    break
                assert time.monotonic() < deadline, f"request {index} never got through"
                await asyncio.sleep(0.1)  # the gateway is restarting
            log.finished()


async def kill_and_restart_when(
    log: LoadLog,
    kill: Callable[[], None],
    restart: Callable[[], object],
    while_down: Callable[[], int],
) -> tuple[int, int]:
    """SIGKILL the gateway once ``log.milestone`` requests finished and restart it. Returns
    the number of requests finished at the kill and what ``while_down()`` (called between the
    kill and the restart) returned."""
    await log.reached.wait()
    finished_at_kill = log.finished_requests
    await asyncio.to_thread(kill)
    observed = await asyncio.to_thread(while_down)
    await asyncio.sleep(0.5)  # clients find the port closed for a while
    await asyncio.to_thread(restart)
    return finished_at_kill, observed
