"""The request path of every ``/v1`` inference route: auth ▸ admission ▸ proxy ▸ metering.

:class:`OpenAIHandler` lives on ``app.state.handler``; routes call :meth:`OpenAIHandler.handle`.
For every authenticated request it emits exactly one :class:`UsageEvent` (also for
refusals, upstream errors and cancelled streams) and, when admission reserved tokens,
settles the ticket exactly once with the real count.

Thinking reaches clients as ``reasoning_content`` whatever the engine: aiforge's replica
server uses that name, and a vLLM replica's ``reasoning`` is renamed on the way
(:func:`aiforge.gateway.metering.with_reasoning_content`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import anyio
from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from aiforge.cluster.replicas import Replica, ReplicaTable
from aiforge.config import Settings
from aiforge.gateway.access import Admission, Authenticator, UsageSink
from aiforge.types import GATEWAY_CRASHED, AuthError, LimitExceeded, Principal, RequestKind, Ticket, UsageEvent
from aiforge.gateway.dialect import conform_vllm_answer
from aiforge.gateway.errors import (
    GatewayError,
    limits_unavailable,
    model_not_found,
    rate_limited,
)
from aiforge.gateway.metering import (
    StreamMeter,
    TokenUsage,
    usage_from_body,
)
from aiforge.gateway.metrics import GatewayMetrics
from aiforge.gateway.proxy import ReplicaProxy, upstream_failed
from aiforge.gateway.request import ProxiedRequest, parse_request, read_body
from aiforge.gateway.request_id import scope_request_id
from aiforge.gateway.upstream import UpstreamError, UpstreamResponse

log = logging.getLogger(__name__)

_STREAM_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
_REASONING_ENGINES = frozenset({"vllm"})
"""Engines whose replicas name thinking ``reasoning`` (vLLM ≥ 0.11), not ``reasoning_content``."""


def renames_reasoning(replica: Replica) -> bool:
    return replica.engine in _REASONING_ENGINES


@dataclass(slots=True)
class _Call:
    """One request's bookkeeping from authentication to its usage event."""

    request_id: str
    kind: RequestKind
    principal: Principal
    started_at: float
    t0: float
    model: str = ""
    stream: bool = False
    estimated_prompt_tokens: int = 0
    ticket: Ticket | None = None
    replica: Replica | None = None
    stream_completed: bool = False
    stream_error: str | None = None
    finished: bool = False


class RelayResponse(StreamingResponse):
    """A streaming response that always runs ``cleanup`` once it ends, however it ends
    (even when the client vanished before the first byte), so the upstream connection is
    released and usage is recorded at once."""

    def __init__(
        self, content: AsyncIterator[bytes], *, cleanup: Callable[[], Awaitable[None]]
    ) -> None:
        super().__init__(content, media_type="text/event-stream", headers=_STREAM_HEADERS)
        self._cleanup = cleanup

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self._cleanup()


class OpenAIHandler:
    """Serves the proxied OpenAI routes for one gateway app."""

    def __init__(
        self,
        settings: Settings,
        *,
        replicas: ReplicaTable,
        proxy: ReplicaProxy,
        authenticator: Authenticator,
        admission: Admission,
        usage_sink: UsageSink,
        metrics: GatewayMetrics,
    ) -> None:
        self.settings = settings
        self.replicas = replicas
        self.proxy = proxy
        self.authenticator = authenticator
        self.admission = admission
        self.usage_sink = usage_sink
        self.metrics = metrics

    def authenticate(self, request: Request) -> Principal:
        """The caller, or a 401/403 :class:`GatewayError`."""
        try:
            return self.authenticator.authenticate(request.headers.get("authorization"))
        except AuthError as exc:
            kind = "invalid_request_error" if exc.status == 401 else "permission_error"
            raise GatewayError(exc.status, exc.message, type=kind, code=exc.code) from None

    async def handle(self, request: Request, kind: RequestKind, path: str) -> Response:
        """Answer one inference request (``path`` is the replica route, e.g. ``/v1/embeddings``)."""
        principal = self.authenticate(request)
        call = _Call(
            request_id=scope_request_id(request.scope),
            kind=kind,
            principal=principal,
            started_at=time.time(),
            t0=time.perf_counter(),
        )
        try:
            parsed = await self._admit(request, call)
            replica, upstream = await self._open(call, parsed, path, request)
        except GatewayError as exc:
            await self._finish(call, status=exc.status, error_type=exc.code or exc.type)
            raise
        except BaseException as exc:
            await self._abandon(call, exc, replica=None)
            raise
        if parsed.stream and upstream.status_code == 200:
            meter = StreamMeter(
                client_usage=parsed.client_wants_usage,
                client_continuous_usage=parsed.client_wants_continuous_usage,
                rename_reasoning=renames_reasoning(replica),
            )

            async def cleanup() -> None:
                await self._close_stream(call, replica, upstream, meter)

            return RelayResponse(self._relay(call, upstream, meter, cleanup), cleanup=cleanup)
        try:
            return await self._answer(call, replica, upstream)
        except BaseException as exc:
            await self._abandon(call, exc, replica=replica)
            raise

    async def _abandon(self, call: _Call, exc: BaseException, *, replica: Replica | None) -> None:
        """The request ends by an exception other than an answer (cancelled at shutdown, or a
        bug): it still gets its one record, settles, and frees the replica."""
        cancelled = isinstance(exc, anyio.get_cancelled_exc_class())
        with anyio.CancelScope(shield=True):
            await self._finish(
                call,
                replica=replica,
                status=499 if cancelled else 500,
                cancelled=cancelled,
                error_type="cancelled" if cancelled else "gateway_error",
            )

    async def _admit(self, request: Request, call: _Call) -> ProxiedRequest:
        body = await read_body(request, self.settings.max_body_bytes)
        parsed = parse_request(body, call.kind)
        call.stream, call.estimated_prompt_tokens = parsed.stream, parsed.estimated_prompt_tokens
        if not self.replicas.serves(parsed.model):
            raise model_not_found(parsed.model)
        call.model = parsed.model
        allowed = call.principal.allowed_models
        if allowed is not None and parsed.model not in allowed:
            raise GatewayError(
                403,
                f"This API key may not use the model `{parsed.model}`.",
                type="permission_error",
                param="model",
                code="model_not_allowed",
            )
        try:
            call.ticket = await self.admission.admit(
                call.principal, parsed.model, parsed.estimated_tokens
            )
        except LimitExceeded as exc:
            raise rate_limited(exc) from None
        except Exception:  # the limits store (Redis) is down or broken: refuse, don't crash
            log.exception("admission failed for %s", call.request_id)
            raise limits_unavailable() from None
        return parsed

    async def _open(
        self, call: _Call, parsed: ProxiedRequest, path: str, request: Request
    ) -> tuple[Replica, UpstreamResponse]:
        self.metrics.in_flight.labels(call.model).inc()
        self._journal_open(call)
        try:
            replica, upstream = await self.proxy.open(
                parsed.model,
                path,
                parsed.upstream_body,
                request.headers,
                request_id=call.request_id,
            )
        except UpstreamError as exc:
            self.metrics.in_flight.labels(call.model).dec()
            raise upstream_failed(exc) from None
        except BaseException:
            self.metrics.in_flight.labels(call.model).dec()
            raise
        call.replica = replica
        return replica, upstream

    def _journal_open(self, call: _Call) -> None:
        """Journal the request's provisional record: if this process dies before ``_finish``,
        replay turns it into the request's one record."""
        principal = call.principal
        provisional = UsageEvent(
            request_id=call.request_id,
            key_id=principal.key_id,
            project_id=principal.project_id,
            organization_id=principal.organization_id,
            model=call.model,
            kind=call.kind,
            status_code=502,
            prompt_tokens=call.estimated_prompt_tokens,
            stream=call.stream,
            started_at=call.started_at,
            error_type=GATEWAY_CRASHED,
        )
        try:
            self.usage_sink.open(provisional)
        except Exception:  # the journal is best effort here; the final record still follows
            log.exception("usage sink failed to open %s", call.request_id)

    async def _answer(self, call: _Call, replica: Replica, upstream: UpstreamResponse) -> Response:
        """A non-streamed answer (or an upstream error), passed through unchanged except for
        a vLLM replica's, which :func:`conform_vllm_answer` brings to OpenAI's shape."""
        try:
            body = await upstream.aread()
        except UpstreamError as exc:
            error = upstream_failed(exc)
            await self._finish(call, replica=replica, status=error.status, error_type=error.code)
            return error.response()
        finally:
            await upstream.aclose()
        ok = upstream.status_code == 200
        if renames_reasoning(replica):
            body = conform_vllm_answer(body, upstream.status_code)
        await self._finish(
            call,
            replica=replica,
            status=upstream.status_code,
            usage=usage_from_body(body) if ok else None,
            error_type=None if ok else "upstream_error",
        )
        media_type = upstream.headers.get("content-type", "application/json")
        return Response(body, status_code=upstream.status_code, media_type=media_type)

    async def _relay(
        self,
        call: _Call,
        upstream: UpstreamResponse,
        meter: StreamMeter,
        cleanup: Callable[[], Awaitable[None]],
    ) -> AsyncIterator[bytes]:
        """Forward the SSE bytes; usage is recorded by ``cleanup`` however the stream ends."""
        try:
            async for chunk in upstream.aiter_raw():
                out = meter.feed(chunk)
                if out:
                    yield out
            rest = meter.flush()
            if rest:
                yield rest
            call.stream_completed = True
        except UpstreamError as exc:
            call.stream_error = f"upstream_error: {type(exc).__name__}"
        finally:
            with anyio.CancelScope(shield=True):
                await cleanup()

    async def _close_stream(
        self, call: _Call, replica: Replica, upstream: UpstreamResponse, meter: StreamMeter
    ) -> None:
        """Idempotent end of a stream: close upstream, settle, record usage."""
        if call.finished:
            return
        await upstream.aclose()
        # The replica sends usage on every chunk, so the last one forwarded is exact however
        # the stream ended. Only a replica that sends none leaves the fallback: the content
        # events forwarded, and the admission estimate for the prompt.
        usage = meter.usage or TokenUsage(
            prompt_tokens=call.estimated_prompt_tokens, completion_tokens=meter.content_events
        )
        ttft = None if meter.first_content_at is None else meter.first_content_at - call.t0
        failed = call.stream_error is not None
        await self._finish(
            call,
            replica=replica,
            status=502 if failed else 200,
            usage=usage,
            ttft_s=ttft,
            cancelled=not call.stream_completed and not failed,
            error_type=call.stream_error,
        )

    async def _finish(
        self,
        call: _Call,
        *,
        status: int,
        usage: TokenUsage | None = None,
        ttft_s: float | None = None,
        cancelled: bool = False,
        error_type: str | None = None,
        replica: Replica | None = None,
    ) -> None:
        """Release the replica, settle admission, count metrics and emit the request's one
        usage event. Runs once per request; later calls do nothing."""
        if call.finished:
            return
        call.finished = True
        if replica is not None:
            self.proxy.release(replica)
            self.metrics.in_flight.labels(call.model).dec()
        usage = usage or TokenUsage()
        latency_s = time.perf_counter() - call.t0
        if call.ticket is not None:
            try:
                await self.admission.settle(call.ticket, usage.total_tokens)
            except Exception:  # settling must never turn an answer into an error
                log.exception("admission settle failed for %s", call.request_id)
        self.metrics.observe(
            model=call.model,
            kind=call.kind,
            status=status,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            ttft_s=ttft_s,
            latency_s=latency_s,
        )
        event = UsageEvent(
            request_id=call.request_id,
            key_id=call.principal.key_id,
            project_id=call.principal.project_id,
            organization_id=call.principal.organization_id,
            model=call.model,
            kind=call.kind,
            status_code=status,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cached_tokens=usage.cached_tokens,
            replica=call.replica.id if call.replica else "",
            ttft_ms=None if ttft_s is None else ttft_s * 1000.0,
            latency_ms=latency_s * 1000.0,
            stream=call.stream,
            cancelled=cancelled,
            started_at=call.started_at,
            error_type=error_type,
        )
        try:
            self.usage_sink.record(event)
        except Exception:  # the sink journals durably; a failure here must not fail the answer
            log.exception("usage sink failed for %s", call.request_id)
