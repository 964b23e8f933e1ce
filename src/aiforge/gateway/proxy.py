"""Forwarding a request to a replica its deployment's router picks, over pooled
connections (:mod:`aiforge.gateway.upstream`), with failover before the first byte.

A request is retried on another replica — with the same ``x-request-id`` — when its replica
failed before answering: the connection was refused or reset, the replica closed it before
the response head, or it answered 503 (draining, engine down). A read timeout is not
retried (the replica may still be working on it). Each replica tried is excluded from the
next choice; the router also skips an unreachable replica for a few seconds so concurrent
requests do not all find it dead. Once a response head with another status arrives, the
request is committed to that replica. The caller ends every endpoint it was given with
:meth:`ReplicaProxy.release`.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableSequence
from dataclasses import dataclass, field

from aiforge.gateway.dialects import dialect_of
from aiforge.gateway.errors import no_replica
from aiforge.gateway.upstream import UpstreamError, UpstreamPool, UpstreamResponse, UpstreamTimeout
from aiforge.protocol.openai.errors import OpenAIError
from aiforge.router.base import Endpoint, RoutingRequest
from aiforge.router.directory import DeploymentRouter

FORWARDED_HEADERS = ("traceparent", "tracestate")
"""Client headers passed on (tracing); ``x-request-id`` is the gateway's own, never the client's."""
_RETRY_STATUSES = frozenset({503})

DEFAULT_MAX_ATTEMPTS = 3


@dataclass(slots=True)
class Attempts:
    """The replicas one request has been sent to, for failover across open and relay."""

    limit: int = DEFAULT_MAX_ATTEMPTS
    tried: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def left(self) -> bool:
        return len(self.tried) < self.limit


class ReplicaProxy:
    """Opens upstream responses (streamed) on the replica the router chooses."""

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool

    async def open(
        self,
        router: DeploymentRouter,
        request: RoutingRequest,
        path: str,
        body: bytes,
        client_headers: Mapping[str, str],
        attempts: Attempts,
    ) -> tuple[Endpoint, UpstreamResponse]:
        """Send ``body`` to ``path`` on a replica of ``router``'s deployment, trying others
        while ``attempts`` allow; the caller must close the response and
        :meth:`release` the endpoint.

        Raises a 503 :class:`OpenAIError` when no replica could take it, and
        :class:`UpstreamError` when one failed after it may have started on the request.
        """
        headers = upstream_headers(request.request_id, client_headers)
        while attempts.left:
            endpoint = router.select(request, exclude=attempts.tried)
            if endpoint is None:
                break
            attempts.tried.append(endpoint.id)
            router.begin(endpoint, request)
            try:
                sent = dialect_of(endpoint.dialect).conform_request(path, body)
                response = await self.pool.post(endpoint.url, path, sent, headers)
            except UpstreamTimeout:
                router.end(endpoint, request, ok=False)
                raise
            except UpstreamError as exc:
                router.end(endpoint, request, ok=False)
                router.report_unreachable(endpoint)
                attempts.errors.append(f"{endpoint.id}: {exc}")
                continue
            except BaseException:
                router.end(endpoint, request, ok=False)
                raise
            if response.status_code in _RETRY_STATUSES and attempts.left:
                await response.aclose()
                router.end(endpoint, request, ok=False)
                attempts.errors.append(f"{endpoint.id}: HTTP {response.status_code}")
                continue
            return endpoint, response
        raise no_replica(request.model, _why(router, attempts.errors))

    @staticmethod
    def release(
        router: DeploymentRouter,
        endpoint: Endpoint,
        request: RoutingRequest,
        *,
        ok: bool,
        tokens: int = 0,
    ) -> None:
        router.end(endpoint, request, ok=ok, tokens=tokens)


def upstream_headers(request_id: str, client_headers: Mapping[str, str]) -> dict[str, str]:
    headers = {"content-type": "application/json", "x-request-id": request_id}
    for name in FORWARDED_HEADERS:
        value = client_headers.get(name)
        if value is not None:
            headers[name] = value
    return headers


def _why(router: DeploymentRouter, errors: MutableSequence[str]) -> str:
    return "; ".join(errors) if errors else router.why_none()


def upstream_failed(exc: UpstreamError) -> OpenAIError:
    return OpenAIError(
        f"The replica failed while answering: {type(exc).__name__}.",
        status_code=502,
        type="server_error",
        code="upstream_error",
    )
