"""HTTP health checks: one GET of a replica's health endpoint, and the prober the controller
uses for external replicas (attached by URL, with no process of ours to watch).

A check never raises for an unreachable replica: it answers ``(healthy, detail)``.
"""

from __future__ import annotations

from typing import Protocol

import httpx

from aiforge.cluster.runtimes.base import ReplicaProbe

__all__ = ["EndpointProber", "HttpEndpointProber", "check_health", "endpoint_base"]

DEFAULT_HEALTH_PATH = "/health"


def endpoint_base(url: str) -> str:
    """A replica's base URL as the gateway and the prober want it: no ``/v1``, no slash."""
    return url.rstrip("/").removesuffix("/v1")


async def check_health(client: httpx.AsyncClient, url: str) -> tuple[bool, str]:
    """GET ``url``: healthy on 200; otherwise the status or the connection error."""
    try:
        response = await client.get(url)
    except httpx.HTTPError as exc:
        return False, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if response.status_code == 200:
        return True, ""
    return False, f"health {response.status_code}"


class EndpointProber(Protocol):
    """How the controller looks at an external replica (a seam: tests pass a fake)."""

    async def probe(self, url: str) -> ReplicaProbe:
        """Never raises for an unreachable replica."""

    async def context_length(self, url: str) -> int | None:
        """The context length the replica at ``url`` reports (``max_model_len`` in its
        ``/v1/models``, as vLLM's server and aiforge's say it); None when it says none."""

    async def aclose(self) -> None:
        """Release connections."""


class HttpEndpointProber:
    """Probes ``<url>/health`` over HTTP. ``alive`` means it answered at all."""

    def __init__(
        self,
        *,
        timeout_s: float = 2.0,
        health_path: str = DEFAULT_HEALTH_PATH,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.health_path = health_path
        self._client = httpx.AsyncClient(timeout=timeout_s, transport=transport)

    async def probe(self, url: str) -> ReplicaProbe:
        healthy, detail = await check_health(self._client, endpoint_base(url) + self.health_path)
        alive = healthy or detail.startswith("health ")
        return ReplicaProbe(alive=alive, healthy=healthy, detail=detail)

    async def context_length(self, url: str) -> int | None:
        try:
            response = await self._client.get(endpoint_base(url) + "/v1/models")
            value = response.json()["data"][0].get("max_model_len")
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError, AttributeError):
            return None
        return value if isinstance(value, int) and value > 0 else None

    async def aclose(self) -> None:
        await self._client.aclose()
