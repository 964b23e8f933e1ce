"""The routing seam: a policy picks one replica of a deployment for one request.

Policies are small strategy classes, one per file under :mod:`aiforge.router.policies`,
registered by name (:mod:`aiforge.router.registry`) and chosen per deployment. The gateway
never looks inside them: it asks its deployment's router
(:class:`~aiforge.router.directory.DeploymentRouter`) for an endpoint, tells it when the
request starts and ends, and on a failure before the first byte asks again with the failed
endpoint excluded.

Everything here is pure and in-memory, called from the gateway's event loop: a policy must
answer in microseconds and never do I/O.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

__all__ = ["Endpoint", "RoutingPolicy", "RoutingRequest"]


@dataclass(frozen=True, slots=True)
class RoutingRequest:
    """What a policy may know about a request."""

    request_id: str
    model: str
    prefix: str = ""
    """The leading text of the conversation (system prompt, then the first messages, in
    order; the prompt of a completion), at most ``PREFIX_CHARS`` characters. Requests that
    share it share a KV-cache prefix on the replica that served them."""
    session: str | None = None
    """A client's session: the OpenAI ``user`` field or the ``x-session-id`` header."""


PREFIX_CHARS = 16384
"""How much of a conversation's leading text the gateway hands to policies."""


@dataclass(eq=False, slots=True)
class Endpoint:
    """One ready (or draining) replica as the router sees it.

    ``in_flight`` is maintained by the directory from :meth:`DeploymentRouter.begin` /
    :meth:`~DeploymentRouter.end`; policies read it, never write it.
    """

    id: str
    deployment: str
    url: str
    dialect: str = "openai"
    node: str = "local"
    in_flight: int = 0


class RoutingPolicy(abc.ABC):
    """Selects a replica for a request among healthy candidates; hears when requests start
    and end and when the set of replicas changes (to keep its own state, e.g. a hash ring
    or a prefix table)."""

    name: ClassVar[str]

    @abc.abstractmethod
    def select(self, candidates: Sequence[Endpoint], request: RoutingRequest) -> Endpoint:
        """One of ``candidates`` (never empty) for ``request``."""

    def on_request_start(self, endpoint: Endpoint, request: RoutingRequest) -> None:  # noqa: B027
        """``request`` was sent to ``endpoint``."""

    def on_request_end(  # noqa: B027
        self, endpoint: Endpoint, request: RoutingRequest, *, ok: bool
    ) -> None:
        """``request`` on ``endpoint`` finished (``ok``: it was answered)."""

    def on_replicas_changed(self, endpoints: Sequence[Endpoint]) -> None:  # noqa: B027
        """The deployment's routable endpoints are now ``endpoints``."""
