"""Forwarding a request to a ready replica of its model over pooled connections
(:mod:`aiforge.gateway.upstream`).

A connection that fails before the replica sent anything (refused, reset, timed out while
connecting) is retried on the next candidate and the replica is marked unhealthy until the
health monitor sees it answer again. Once response headers arrive, the request is
committed to that replica.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiforge.cluster.replicas import Replica, ReplicaState, ReplicaTable
from aiforge.gateway.errors import GatewayError, no_replica
from aiforge.gateway.upstream import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamPool,
    UpstreamResponse,
)

_FORWARDED_HEADERS = ("traceparent", "tracestate")
"""Client headers passed on (tracing); ``x-request-id`` is the gateway's own, never the client's."""


class ReplicaProxy:
    """Opens upstream responses (streamed) on the least-loaded ready replica."""

    def __init__(self, table: ReplicaTable, pool: UpstreamPool, *, max_attempts: int = 3) -> None:
        self.table = table
        self.pool = pool
        self.max_attempts = max_attempts

    async def open(
        self,
        model: str,
        path: str,
        body: bytes,
        client_headers: Mapping[str, str],
        *,
        request_id: str,
    ) -> tuple[Replica, UpstreamResponse]:
        """Send ``body`` to ``path`` on a replica, as ``x-request-id: request_id``; the caller
        must close the response and call :meth:`release` with the replica.

        Raises a 503 :class:`GatewayError` when no replica can be reached, and
        :class:`UpstreamError` when one failed after it may have started on the request.
        """
        candidates = self.table.candidates(model)[: self.max_attempts]
        if not candidates:
            raise no_replica(model, self._why_none(model))
        headers = {"content-type": "application/json", "x-request-id": request_id}
        for name in _FORWARDED_HEADERS:
            value = client_headers.get(name)
            if value is not None:
                headers[name] = value
        errors: list[str] = []
        for replica in candidates:
            replica.in_flight += 1
            try:
                response = await self.pool.post(replica.url, path, body, headers)
            except UpstreamConnectError as exc:
                replica.in_flight -= 1
                errors.append(f"{replica.id}: {type(exc).__name__}")
                if replica.state == ReplicaState.READY:
                    self.table.set_state(
                        replica.id, ReplicaState.UNHEALTHY, error=f"{type(exc).__name__}: {exc}"
                    )
                continue
            except BaseException:
                replica.in_flight -= 1
                raise
            return replica, response
        raise no_replica(model, "; ".join(errors))

    @staticmethod
    def release(replica: Replica) -> None:
        replica.in_flight = max(0, replica.in_flight - 1)

    def _why_none(self, model: str) -> str:
        states = sorted({r.state.value for r in self.table if r.model == model})
        return "replicas are " + ", ".join(states) if states else "no replica"


def upstream_failed(exc: UpstreamError) -> GatewayError:
    return GatewayError(
        502,
        f"The replica failed while answering: {type(exc).__name__}.",
        type="server_error",
        code="upstream_error",
    )
