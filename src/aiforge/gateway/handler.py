"""The request path of every ``/v1`` inference route: auth ▸ admission ▸ route ▸ proxy ▸ metering.

:class:`OpenAIHandler` lives on ``app.state.handler``; routes call :meth:`OpenAIHandler.handle`.
For every authenticated request it emits exactly one :class:`UsageEvent` (also for
refusals, upstream errors, failovers and cancelled streams) and, when admission reserved
tokens, settles the ticket exactly once with the real count.

The model name resolves to a deployment in the :class:`ReplicaDirectory` (which the
controller publishes to); its router picks the replica. A replica that fails before the
client got a byte — before its answer's head, or a stream that broke before its first event
was forwarded, or a non-streamed body cut short — is replaced by another one, with the same
request id, within :data:`~aiforge.gateway.proxy.DEFAULT_MAX_ATTEMPTS` tries. A stream that
breaks after the client got events ends with an SSE error event (``data: {"error": …}``,
which OpenAI's clients raise), metered with the usage it had reached.

Each replica's answers are read in its engine's dialect (:mod:`aiforge.gateway.dialects`):
thinking reaches clients as ``reasoning_content`` whatever the engine.

A client that disconnects is noticed while the replica works (the ASGI receive channel is
watched for ``http.disconnect`` from :data:`WATCH_AFTER_S` after the request went out until
the answer is ready; a stream's relay, by :class:`~aiforge.gateway.relay.RelayResponse`):
the upstream connection is closed, so the replica aborts the request in its engine, and the
request is recorded as cancelled (499). On shutdown :meth:`OpenAIHandler.drain` refuses new
requests (503), lets those in flight finish for a grace period, then ends open streams with
an SSE error event and the others with a 503 envelope, each recorded once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
from fastapi import Request
from fastapi.responses import Response
from starlette.background import BackgroundTask

from aiforge.config import Settings
from aiforge.gateway.access import Admission, Authenticator, UsageSink
from aiforge.gateway.dialects import Dialect, dialect_of
from aiforge.gateway.errors import (
    error_response,
    limits_unavailable,
    model_not_found,
    rate_limited,
    shutting_down,
)
from aiforge.gateway.images import inline_images
from aiforge.gateway.metering import StreamMeter, TokenUsage, usage_from_body
from aiforge.gateway.metrics import GatewayMetrics
from aiforge.gateway.proxy import FORWARDED_HEADERS, Attempts, ReplicaProxy, upstream_failed
from aiforge.gateway.relay import (
    SHUTTING_DOWN,
    RelayResponse,
    client_left,
    stream_error_event,
)
from aiforge.gateway.request import (
    CLIENT_CLOSED,
    ProxiedRequest,
    check_content_type,
    client_closed,
    parse_request,
    pick_headers,
    read_body,
)
from aiforge.gateway.request_id import scope_request_id
from aiforge.gateway.routing_keys import SESSION_HEADER, conversation_prefix, session_key
from aiforge.gateway.upstream import UpstreamError, UpstreamResponse, UpstreamTimeout
from aiforge.protocol.openai.errors import OpenAIError
from aiforge.router.base import Endpoint, RoutingRequest
from aiforge.router.directory import DeploymentRouter, ReplicaDirectory
from aiforge.types import (
    GATEWAY_CRASHED,
    AuthError,
    LimitExceeded,
    Principal,
    RequestKind,
    Ticket,
    UsageEvent,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class InternalRequest:
    """A request the gateway makes on a caller's behalf (:meth:`OpenAIHandler.submit`)."""

    principal: Principal
    """Whose request it is: admitted against its limits and metered to it."""
    kind: RequestKind
    path: str
    """The replica route, e.g. ``/v1/chat/completions``."""
    body: bytes
    """The OpenAI request body, as a client would send it."""
    request_id: str
    """The id of its one usage record: a retry under the same id is metered once."""
    headers: Mapping[str, str] = field(default_factory=dict)
    """Headers a client would have sent (routing reads ``x-session-id`` and the like)."""


async def _never() -> None:
    """Nobody is waiting who could leave (a batch line): never returns."""
    await asyncio.Event().wait()


async def _cancel_when_left(
    left: Callable[[], Awaitable[None]], call: _Call, task: asyncio.Task[Any]
) -> None:
    """Cancel ``task`` (the request's, awaiting its answer) once ``left`` returns — or fails,
    which is taken as the client being gone — unless the answer is being recorded already."""
    with contextlib.suppress(Exception):
        await left()
    if not call.finished and call.work is task:
        call.interrupted = call.interrupted or "client_left"
        task.cancel()


WATCH_AFTER_S = 0.005
"""How long a request waits for its answer before the gateway watches for its client leaving."""
_READ_HEADERS = (*FORWARDED_HEADERS, SESSION_HEADER)
"""The client headers the request path reads after admission (not a copy of all of them)."""
_HANDLED_HEADERS = frozenset({"authorization", "content-type", *_READ_HEADERS})
"""Every header :meth:`OpenAIHandler.handle` reads, picked in one pass."""
_PREFIX_POLICIES = frozenset({"prefix_affinity"})
"""Policies that read the conversation prefix (computed only for them)."""
Interruption = Literal["client_left", "shutting_down"]


@dataclass(slots=True)
class _Call:
    """One request's bookkeeping from authentication to its usage event."""

    request_id: str
    kind: RequestKind
    principal: Principal
    started_at: float
    t0: float
    path: str = ""
    model: str = ""
    stream: bool = False
    estimated_prompt_tokens: int = 0
    ticket: Ticket | None = None
    router: DeploymentRouter | None = None
    routing: RoutingRequest | None = None
    parsed: ProxiedRequest | None = None
    client_headers: dict[str, str] = field(default_factory=dict)
    attempts: Attempts = field(default_factory=Attempts)
    endpoint: Endpoint | None = None
    """The replica the request is committed to now (released by ``_finish``)."""
    upstream: UpstreamResponse | None = None
    meter: StreamMeter | None = None
    counted_in_flight: bool = False
    stream_completed: bool = False
    stream_error: str | None = None
    finished: bool = False
    interrupted: Interruption | None = None
    """Why the request was cut before its answer was complete (set before cancelling it)."""
    work: asyncio.Task[Any] | None = None
    """The task waiting on the replica's answer (cancelled when the client leaves)."""

    @property
    def dialect(self) -> Dialect:
        return dialect_of(self.endpoint.dialect if self.endpoint else "openai")


class AfterAnswer(BackgroundTask):
    """A plain answer's bookkeeping — its usage record, settling its limits, releasing its
    replica, metrics — run as the answer's ``background``: once the answer is written to
    the client (the front and Starlette's ``Response`` both run it right after the write,
    in the same step for the in-memory limits), so at one connection the client does not
    wait for it. :meth:`OpenAIHandler.submit` runs it before returning. A crash between the
    write and the record leaves the request's provisional record, as it would for a stream
    whose events were already forwarded. (Starlette's own ``BackgroundTask`` inspects its
    function on every construction, which costs more than the rest of this.)"""

    def __init__(self, finish: Callable[[], Awaitable[None]]) -> None:
        self._finish = finish

    async def __call__(self) -> None:
        await self._finish()


class PlainAnswer(Response):
    """A replica's plain answer as it came: its bytes, status and media type (Starlette's
    ``Response`` would work out its headers again on every construction)."""

    def __init__(self, body: bytes, status_code: int, media_type: str) -> None:
        self.body = body
        self.status_code = status_code
        self.media_type = media_type
        self.background = None
        self.raw_headers = [
            (b"content-length", b"%d" % len(body)),
            (b"content-type", media_type.encode("latin-1")),
        ]


class OpenAIHandler:
    """Serves the proxied OpenAI routes for one gateway app."""

    def __init__(
        self,
        settings: Settings,
        *,
        directory: ReplicaDirectory,
        proxy: ReplicaProxy,
        authenticator: Authenticator,
        admission: Admission,
        usage_sink: UsageSink,
        metrics: GatewayMetrics,
    ) -> None:
        self.settings = settings
        self.directory = directory
        self.proxy = proxy
        self.authenticator = authenticator
        self.admission = admission
        self.usage_sink = usage_sink
        self.metrics = metrics
        self.draining = False
        """Set by :meth:`drain`: new requests are refused with a 503."""
        self._ending = False
        self._calls: dict[str, _Call] = {}
        """Requests between authentication and their usage event."""
        self._idle = asyncio.Event()
        self._idle.set()

    def authenticate(self, request: Request) -> Principal:
        """The caller, or a 401/403 :class:`OpenAIError`."""
        return self._authenticate(request.headers.get("authorization"))

    def _authenticate(self, authorization: str | None) -> Principal:
        try:
            return self.authenticator.authenticate(authorization)
        except AuthError as exc:
            kind = "invalid_request_error" if exc.status == 401 else "permission_error"
            raise OpenAIError(
                exc.message, status_code=exc.status, type=kind, code=exc.code
            ) from None

    def visible_models(self, principal: Principal) -> list[str]:
        """The deployments ``principal`` may use (its project's, and its key's allowlist)."""
        project = None if principal.is_platform_admin else principal.project_id
        models = self.directory.models(project)
        if principal.allowed_models is not None:
            models = [m for m in models if m in principal.allowed_models]
        return models

    async def handle(self, request: Request, kind: RequestKind, path: str) -> Response:
        """Answer one inference request (``path`` is the replica route, e.g. ``/v1/embeddings``)."""
        headers = pick_headers(request.scope["headers"], _HANDLED_HEADERS)
        return await self.answer(
            kind,
            path,
            scope_request_id(request.scope),
            headers,
            functools.partial(read_body, request, self.settings.max_body_bytes),
            functools.partial(client_left, request.receive),
        )

    async def answer(
        self,
        kind: RequestKind,
        path: str,
        request_id: str,
        headers: Mapping[str, str],
        body: bytes | Callable[[], Awaitable[bytes]],
        left: Callable[[], Awaitable[None]],
    ) -> Response:
        """Answer one inference request however it arrived (ASGI, or the gateway's own
        front): ``headers`` by lower-case name, ``body`` the bytes or how to read them
        (after authentication), ``left`` returns once the client is gone."""
        principal = self._authenticate(headers.get("authorization"))
        call = self._open_call(principal, kind, path, request_id)
        try:
            self._refuse_if_draining()
            check_content_type(headers.get("content-type"))
            if not isinstance(body, bytes):
                body = await body()
            parsed = await self._admit(call, body, headers)
        except OpenAIError as exc:
            await self._refused(call, exc)
            raise
        except BaseException as exc:
            await self._abandon(call, exc)
            raise
        return await self._unless_interrupted(left, call, self._proxied(call, parsed))

    async def left_mid_upload(
        self, kind: RequestKind, path: str, request_id: str, headers: Mapping[str, str]
    ) -> None:
        """A client left while its body was still arriving: an authenticated one gets its
        record (a 499, as :meth:`handle` records a disconnect while it reads the body)."""
        try:
            principal = self._authenticate(headers.get("authorization"))
        except OpenAIError:
            return
        await self._refused(self._open_call(principal, kind, path, request_id), client_closed())

    async def submit(
        self,
        internal: InternalRequest,
        *,
        client_left: Callable[[], Awaitable[None]] | None = None,
    ) -> Response:
        """Answer a request made inside the gateway on a caller's behalf (a Responses API
        turn, a batch line): the same path as :meth:`handle` — admission, routing, failover,
        metering with exactly one usage event under ``internal.request_id`` — minus reading
        an HTTP request. Refusals raise :class:`OpenAIError` (recorded like any refusal).

        ``client_left`` returns when whoever waits for the answer is gone (the request is
        then cancelled as a disconnect is); None when nobody can leave (a batch). A streamed
        request's answer is a :class:`RelayResponse`: iterate its ``body_iterator`` (SSE
        bytes of chat chunks) and call its :meth:`~RelayResponse.aclose` when done with it.
        """
        call = self._open_call(
            internal.principal, internal.kind, internal.path, internal.request_id
        )
        try:
            self._refuse_if_draining()
            parsed = await self._admit(call, internal.body, internal.headers)
        except OpenAIError as exc:
            await self._refused(call, exc)
            raise
        except BaseException as exc:
            await self._abandon(call, exc)
            raise
        response = await self._unless_interrupted(
            client_left or _never, call, self._proxied(call, parsed)
        )
        if response.background is not None:  # nobody else sends it: record it now
            background, response.background = response.background, None
            await background()
        return response

    def _open_call(
        self, principal: Principal, kind: RequestKind, path: str, request_id: str
    ) -> _Call:
        call = _Call(
            request_id=request_id,
            kind=kind,
            principal=principal,
            started_at=time.time(),
            t0=time.perf_counter(),
            path=path,
        )
        self._calls[call.request_id] = call
        self._idle.clear()
        return call

    def _refuse_if_draining(self) -> None:
        if self.draining:
            raise shutting_down()

    async def _refused(self, call: _Call, exc: OpenAIError) -> None:
        closed = exc.status_code == CLIENT_CLOSED
        await self._finish(
            call,
            status=exc.status_code,
            cancelled=closed,
            error_type="cancelled" if closed else exc.code or exc.type,
        )

    async def _unless_interrupted(
        self,
        left: Callable[[], Awaitable[None]],
        call: _Call,
        work: Coroutine[Any, Any, Response],
    ) -> Response:
        """The response ``work`` makes (the replica's answer, or the relay of its stream),
        unless the client disconnects first or :meth:`end_in_flight` ends the request: then
        ``work`` is cancelled — which closes the upstream connection, so the replica aborts
        the request — and the request is recorded as cancelled (499) or shut down (503).

        ``work`` runs in the request's own task; a watcher task waits for ``left`` and
        cancels it (a cancellation from anywhere else, such as a forced shutdown, is
        re-raised). The watcher starts only once the answer has taken
        :data:`WATCH_AFTER_S`: most of a watcher's cost is starting and stopping it, and an
        answer ready sooner has left the replica nothing to abort."""
        if self._ending:
            work.close()
            error = shutting_down()
            await self._refused(call, error)
            return error_response(error)
        current = asyncio.current_task()
        assert current is not None
        call.work = current
        watcher: list[asyncio.Task[None]] = []

        def watch() -> None:
            watcher.append(asyncio.ensure_future(_cancel_when_left(left, call, current)))

        timer = asyncio.get_running_loop().call_later(WATCH_AFTER_S, watch)
        try:
            return await work
        except asyncio.CancelledError:
            if call.interrupted is None or current.uncancel() > 0:
                raise
            return error_response(shutting_down() if call.interrupted == SHUTTING_DOWN
                                  else client_closed())  # fmt: skip
        finally:
            call.work = None
            timer.cancel()
            for task in watcher:
                task.cancel()

    async def _proxied(self, call: _Call, parsed: ProxiedRequest) -> Response:
        """Open the answer on a replica and answer (a stream is relayed by the response)."""
        try:
            upstream = await self._open(call)
        except OpenAIError as exc:
            await self._finish(call, status=exc.status_code, error_type=exc.code or exc.type)
            raise
        except BaseException as exc:
            await self._abandon(call, exc)
            raise
        if parsed.stream and upstream.status_code == 200:
            call.upstream = upstream
            call.meter = self._meter(call)

            async def cleanup() -> None:
                await self._close_stream(call)

            return RelayResponse(self._relay(call, cleanup), cleanup=cleanup)
        try:
            return await self._answer(call, upstream)
        except BaseException as exc:
            await self._abandon(call, exc)
            raise

    async def _abandon(self, call: _Call, exc: BaseException) -> None:
        """The request ends by an exception other than an answer (its client left, it was
        ended at shutdown, or a bug): it still gets its one record, settles, and frees the
        replica."""
        cancelled = isinstance(exc, anyio.get_cancelled_exc_class())
        error_type: str
        if cancelled and call.interrupted == SHUTTING_DOWN:
            status, error_type = 503, SHUTTING_DOWN
        elif cancelled:
            status, error_type = CLIENT_CLOSED, "cancelled"
        else:
            status, error_type = 500, "gateway_error"
        with anyio.CancelScope(shield=True):
            await self._finish(call, status=status, cancelled=cancelled, error_type=error_type)

    async def drain(self, grace_s: float) -> None:
        """Shut the request path down in about ``grace_s`` (and at most a second more): new
        requests get a 503 at once; those in flight may finish until the grace period ends;
        then :meth:`end_in_flight` ends the rest. Called once, when the gateway stops."""
        self.draining = True
        await self._until_idle(grace_s)
        await self.end_in_flight()

    async def end_in_flight(self, wait_s: float = 1.0) -> None:
        """End every request in flight now: an open stream ends with an SSE error event
        (``shutting_down``; clients raise it), a request still waiting for its answer gets a
        503 envelope; each is recorded, and its replica sees the connection close (and
        aborts the request). Waits up to ``wait_s`` for them to be recorded."""
        self.draining = self._ending = True
        for call in list(self._calls.values()):
            call.interrupted = call.interrupted or SHUTTING_DOWN
            if call.work is not None and not call.work.done():
                if not call.finished:
                    call.work.cancel()
            elif call.upstream is not None:
                await call.upstream.aclose()  # the relay's read fails: it ends the stream
        await self._until_idle(wait_s)

    async def _until_idle(self, timeout_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout_s)

    async def _admit(self, call: _Call, body: bytes, headers: Mapping[str, str]) -> ProxiedRequest:
        parsed = parse_request(body, call.kind)
        call.parsed = parsed
        call.stream, call.estimated_prompt_tokens = parsed.stream, parsed.estimated_prompt_tokens
        principal = call.principal
        router = self.directory.router(parsed.model)
        if router is None or not (
            principal.is_platform_admin or router.visible_to(principal.project_id)
        ):
            raise model_not_found(parsed.model)
        call.model, call.router = parsed.model, router
        allowed = principal.allowed_models
        if allowed is not None and parsed.model not in allowed:
            raise OpenAIError(
                f"This API key may not use the model `{parsed.model}`.",
                status_code=403,
                type="permission_error",
                param="model",
                code="model_not_allowed",
            )
        try:
            call.ticket = await self.admission.admit(
                principal, parsed.model, parsed.demand.bound(router.max_model_len)
            )
        except LimitExceeded as exc:
            raise rate_limited(exc) from None
        except Exception:  # the limits store (Redis) is down or broken: refuse, don't crash
            log.exception("admission failed for %s", call.request_id)
            raise limits_unavailable() from None
        parsed = call.parsed = await inline_images(parsed, self.settings)
        call.client_headers = {
            name: value for name in _READ_HEADERS if (value := headers.get(name)) is not None
        }
        call.routing = RoutingRequest(
            request_id=call.request_id,
            model=parsed.model,
            prefix=conversation_prefix(parsed.payload)
            if router.policy_name in _PREFIX_POLICIES
            else "",
            session=session_key(parsed.payload, call.client_headers),
        )
        return parsed

    async def _open(self, call: _Call) -> UpstreamResponse:
        """Open the answer on a replica (the first, or the next after a failure)."""
        assert call.router is not None
        assert call.routing is not None
        assert call.parsed is not None
        if not call.counted_in_flight:
            self.metrics.started(call.model)
            call.counted_in_flight = True
            self._journal_open(call)
        try:
            endpoint, upstream = await self.proxy.open(
                call.router,
                call.routing,
                call.path,
                call.parsed.upstream_body,
                call.client_headers,
                call.attempts,
            )
        except UpstreamError as exc:
            raise upstream_failed(exc) from None
        call.endpoint = endpoint
        return upstream

    def _release(self, call: _Call, *, ok: bool, tokens: int = 0) -> None:
        endpoint, call.endpoint = call.endpoint, None
        if endpoint is not None and call.router is not None and call.routing is not None:
            self.proxy.release(call.router, endpoint, call.routing, ok=ok, tokens=tokens)

    async def _failover(self, call: _Call, exc: UpstreamError) -> UpstreamResponse | None:
        """The replica broke before the client got a byte: the next replica's answer, or
        None when no try is left (or it was a timeout: the replica may still be at work)."""
        if isinstance(exc, UpstreamTimeout) or not call.attempts.left:
            return None
        failed = call.endpoint
        call.attempts.errors.append(f"{failed.id if failed else '?'}: {exc}")
        if failed is not None and call.router is not None:
            call.router.report_unreachable(failed)
        self._release(call, ok=False)
        log.warning("request %s: replica failed before answering (%s); failing over",
                    call.request_id, exc)  # fmt: skip
        try:
            return await self._open(call)
        except OpenAIError:
            return None

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

    async def _answer(self, call: _Call, upstream: UpstreamResponse) -> Response:
        """A non-streamed answer (or an upstream error), in OpenAI's dialect. A body cut short
        is asked again of another replica: the client has not seen a byte of it."""
        while True:
            try:
                body = await upstream.aread()
            except UpstreamError as exc:
                await upstream.aclose()
                retried = await self._failover(call, exc)
                if retried is None:
                    error = upstream_failed(exc)
                    await self._finish(call, status=error.status_code, error_type=error.code)
                    return error_response(error)
                upstream = retried
                continue
            except BaseException:
                await upstream.aclose()
                raise
            await upstream.aclose()
            break
        ok = upstream.status_code == 200
        body = call.dialect.conform_answer(body, upstream.status_code)
        media_type = upstream.headers.get("content-type", "application/json")
        response = PlainAnswer(body, upstream.status_code, media_type)
        response.background = AfterAnswer(functools.partial(
            self._finish, call, status=upstream.status_code,
            usage=usage_from_body(body) if ok else None,
            error_type=None if ok else "upstream_error",
        ))  # fmt: skip
        return response

    def _meter(self, call: _Call) -> StreamMeter:
        assert call.parsed is not None
        return StreamMeter(
            client_usage=call.parsed.client_wants_usage,
            client_continuous_usage=call.parsed.client_wants_continuous_usage,
            rename_reasoning=call.dialect.renames_reasoning,
        )

    async def _relay(
        self, call: _Call, cleanup: Callable[[], Awaitable[None]]
    ) -> AsyncIterator[bytes]:
        """Forward the SSE bytes; fail over while the client has no generated text yet; end a
        broken stream with an error event. Usage is recorded by ``cleanup`` however the
        stream ends.

        Events before the first generated text (the role chunk) are held back until it
        arrives, so a replica that dies while the request waits in its queue is replaced
        without the client seeing a thing; it costs no time to first token."""
        forwarded = False
        try:
            while call.upstream is not None and call.meter is not None:
                held = b""
                try:
                    async for chunk in call.upstream.aiter_arrivals():
                        out = call.meter.feed(chunk)
                        if not forwarded:
                            held += out
                            if call.meter.first_content_at is None or not held:
                                continue
                            out, held, forwarded = held, b"", True
                        if out:
                            yield out
                    rest = held + call.meter.flush()
                    if call.interrupted == SHUTTING_DOWN and not call.upstream.complete:
                        call.stream_error = SHUTTING_DOWN  # closed before it was read
                        yield rest + stream_error_event(call.request_id, shutting_down=True)
                        return
                    if rest:
                        yield rest
                    call.stream_completed = True
                    return
                except UpstreamError as exc:
                    if call.interrupted == SHUTTING_DOWN:
                        call.stream_error = SHUTTING_DOWN
                        yield held + stream_error_event(call.request_id, shutting_down=True)
                        return
                    retried = None if forwarded else await self._failover(call, exc)
                    if retried is None or retried.status_code != 200:
                        call.stream_error = f"upstream_error: {type(exc).__name__}"
                        if retried is not None:
                            await retried.aclose()
                        yield held + stream_error_event(call.request_id)
                        return
                    call.upstream, call.meter = retried, self._meter(call)
        finally:
            with anyio.CancelScope(shield=True):
                await cleanup()

    async def _close_stream(self, call: _Call) -> None:
        """Idempotent end of a stream: close upstream, settle, record usage."""
        if call.finished:
            return
        if call.upstream is not None:
            await call.upstream.aclose()
        meter = call.meter or self._meter(call)
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
            status=(503 if call.stream_error == SHUTTING_DOWN else 502) if failed else 200,
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
    ) -> None:
        """Release the replica, settle admission, count metrics and emit the request's one
        usage event. Runs once per request; later calls do nothing.

        A non-streamed request cut before its answer (its client left, or shutdown ended it)
        has no usage: the replica reports it only in the answer nobody reads. The replica
        aborts it as the connection closes, but what it had generated by then is unknown
        here, so the admission reservation — an upper bound of what the request could use
        — is kept as the charge (never a refund of what may have been spent), and the
        record says ``cancelled`` with the prompt estimate and no completion tokens. Asking
        the replica afterwards would cost a second round trip and replica state for every
        cancellation, and still not cover replicas of other engines (vLLM); the bound is
        honest for all of them and cannot be slipped by hanging up."""
        if call.finished:
            return
        call.finished = True
        self._calls.pop(call.request_id, None)
        if not self._calls:
            self._idle.set()
        unreported = usage is None and cancelled and call.counted_in_flight
        if unreported:
            usage = TokenUsage(prompt_tokens=call.estimated_prompt_tokens)
        usage = usage or TokenUsage()
        replica_id = call.endpoint.id if call.endpoint else ""
        self._release(call, ok=200 <= status < 500, tokens=usage.completion_tokens)
        if call.counted_in_flight:
            self.metrics.ended(call.model)
        latency_s = time.perf_counter() - call.t0
        if call.ticket is not None:
            try:
                spent = call.ticket.reserved_tokens if unreported else usage.total_tokens
                await self.admission.settle(call.ticket, spent)
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
            deployment=call.model,
            replica=replica_id,
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
