"""Sends one benchmark request to an OpenAI-compatible server and times it (httpx).

The client measures what a user of the server would see, over a plain HTTP connection
with nothing between: the clock starts just before the request is written and each chunk
is timed as its line arrives. It never raises for the server's faults: an HTTP error, a
broken stream, an ``error`` event or a timeout becomes a sample with ``error`` set.

Output tokens come from the server's ``usage`` (streams ask for it with
``stream_options.include_usage``); a stream without usage counts its text-bearing chunks
instead (``tokens_from="chunks"``), which undercounts servers that pack tokens together.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from aiforge.bench.source import BenchRequest
from aiforge.bench.stats import RequestSample

__all__ = ["BenchClient", "Endpoint", "request_body"]

_ERROR_CHARS = 200


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where and how to send: ``base_url`` ends in ``/v1`` (or the server's equivalent)."""

    base_url: str
    model: str
    api_key: str | None = None
    api: Literal["chat", "completions"] = "chat"
    stream: bool = True
    ignore_eos: bool = False
    """Ask for exactly ``max_tokens`` (vLLM's and aiforge's ``ignore_eos`` extension)."""
    temperature: float | None = None
    extra_body: dict[str, Any] = field(default_factory=dict)
    timeout_s: float = 600.0

    @property
    def url(self) -> str:
        path = "chat/completions" if self.api == "chat" else "completions"
        return f"{self.base_url.rstrip('/')}/{path}"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}


def request_body(endpoint: Endpoint, request: BenchRequest) -> dict[str, Any]:
    """The JSON body of ``request`` for ``endpoint``."""
    body: dict[str, Any] = {"model": endpoint.model, "max_tokens": request.max_tokens}
    if endpoint.api == "chat":
        if request.messages is None:
            raise ValueError("the chat endpoint needs messages")
        body["messages"] = request.messages
    else:
        if request.prompt is None:
            raise ValueError("the completions endpoint needs a prompt")
        body["prompt"] = request.prompt
    if endpoint.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    if endpoint.ignore_eos:
        body["ignore_eos"] = True
    if endpoint.temperature is not None:
        body["temperature"] = endpoint.temperature
    body.update(endpoint.extra_body)
    return body


def _chunk_text(chunk: dict[str, Any]) -> str:
    """Generated text in a stream chunk or a whole response's first choice: content,
    reasoning (servers whose reasoning parser classed the output so), completion text or
    tool-call arguments."""
    for choice in (chunk.get("choices") or ())[:1]:
        if not isinstance(choice, dict):
            return ""
        if isinstance(choice.get("text"), str):
            return str(choice["text"])
        delta = choice.get("delta") or choice.get("message") or {}
        parts = [delta.get(k) for k in ("reasoning_content", "reasoning", "content")]
        parts += [(call.get("function") or {}).get("arguments") for call in _tool_calls(delta)]
        return "".join(p for p in parts if isinstance(p, str))
    return ""


def _tool_calls(delta: dict[str, Any]) -> list[dict[str, Any]]:
    calls = delta.get("tool_calls")
    return [c for c in calls if isinstance(c, dict)] if isinstance(calls, list) else []


@dataclass
class _Timing:
    """What one response showed, as it arrived."""

    sent: float
    first: float | None = None
    last: float | None = None
    gaps: list[float] = field(default_factory=list)
    chunks: int = 0
    parts: list[str] = field(default_factory=list)
    usage: dict[str, Any] | None = None

    def text(self, text: str, at: float) -> None:
        if not text:
            return
        if self.first is None:
            self.first = at
        elif self.last is not None:
            self.gaps.append(at - self.last)
        self.last = at
        self.chunks += 1
        self.parts.append(text)


class BenchClient:
    """Sends :class:`BenchRequest` s to one :class:`Endpoint`; use as an async context."""

    def __init__(self, endpoint: Endpoint, transport: httpx.AsyncBaseTransport | None = None):
        self.endpoint = endpoint
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(endpoint.timeout_s, connect=min(endpoint.timeout_s, 30.0)),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=None),
            headers=endpoint.headers(), transport=transport,
        )  # fmt: skip

    async def __aenter__(self) -> BenchClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.aclose()

    async def send(
        self, request: BenchRequest, *, origin: float, scheduled_s: float | None = None
    ) -> tuple[RequestSample, str]:
        """Send ``request``; its sample (times from ``origin``, a ``perf_counter`` value)
        and the generated text (empty on error)."""
        timing = _Timing(sent=time.perf_counter())
        error: str | None = None
        try:
            await self._exchange(request, timing)
        except _ServerError as failure:
            error = str(failure)
        except httpx.TimeoutException:
            error = f"timeout after {self.endpoint.timeout_s:g}s"
        except httpx.HTTPError as failure:
            error = f"{type(failure).__name__}: {failure}"[:_ERROR_CHARS]
        ended = time.perf_counter()
        sample = self._sample(request, timing, ended, origin, scheduled_s, error)
        return sample, "" if error else "".join(timing.parts)

    async def _exchange(self, request: BenchRequest, timing: _Timing) -> None:
        body = request_body(self.endpoint, request)
        async with self._http.stream("POST", self.endpoint.url, json=body) as response:
            if response.status_code >= 400:
                await response.aread()
                raise _ServerError(f"HTTP {response.status_code}: {_error_message(response)}")
            if not self.endpoint.stream:
                payload = _json(await response.aread())
                timing.text(_chunk_text(payload), time.perf_counter())
                timing.usage = _usage(payload)
                return
            done = False
            async for line in response.aiter_lines():
                done = _feed_line(line, timing) or done
            if not done:
                raise _ServerError("the stream ended without [DONE]")

    def _sample(
        self, request: BenchRequest, timing: _Timing, ended: float, origin: float,
        scheduled_s: float | None, error: str | None,
    ) -> RequestSample:  # fmt: skip
        usage = timing.usage or {}
        completion = usage.get("completion_tokens")
        prompt = usage.get("prompt_tokens")
        streamed = self.endpoint.stream and error is None
        return RequestSample(
            index=request.index, start_s=timing.sent - origin, e2e_s=ended - timing.sent,
            ttft_s=(timing.first - timing.sent) if streamed and timing.first is not None else None,
            itl_s=tuple(timing.gaps) if streamed else (),
            output_tokens=completion if isinstance(completion, int) else timing.chunks,
            prompt_tokens=prompt if isinstance(prompt, int) else None,
            tokens_from="usage" if isinstance(completion, int) else "chunks",
            scheduled_s=scheduled_s, conversation=request.conversation, turn=request.turn,
            error=error,
        )  # fmt: skip


class _ServerError(Exception):
    """The server answered, but not with a successful completion."""


def _feed_line(line: str, timing: _Timing) -> bool:
    """Take one SSE line; True at ``[DONE]``. Raises :class:`_ServerError` for an
    ``error`` event or a chunk that is not JSON."""
    if not line.startswith("data:"):
        return False
    payload = line[len("data:") :].strip()
    if payload == "[DONE]":
        return True
    chunk = _json(payload.encode())
    if isinstance(chunk.get("error"), dict):
        message = chunk["error"].get("message") or chunk["error"]
        raise _ServerError(f"stream error: {str(message)[:_ERROR_CHARS]}")
    timing.text(_chunk_text(chunk), time.perf_counter())
    timing.usage = _usage(chunk) or timing.usage
    return False


def _json(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError:
        raise _ServerError(f"not JSON: {raw[:80]!r}") from None
    if not isinstance(value, dict):
        raise _ServerError(f"not a JSON object: {raw[:80]!r}")
    return value


def _usage(payload: dict[str, Any]) -> dict[str, Any] | None:
    usage = payload.get("usage")
    return usage if isinstance(usage, dict) else None


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:_ERROR_CHARS] or response.reason_phrase
    error = body.get("error", body) if isinstance(body, dict) else body
    message = error.get("message") if isinstance(error, dict) else None
    return str(message or error)[:_ERROR_CHARS]
