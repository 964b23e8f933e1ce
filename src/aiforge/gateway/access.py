"""The seams between the gateway's request path and the platform layer.

The gateway asks three questions on every request, each answered from memory:

* :class:`Authenticator` — who is calling? (API key -> :class:`Principal`)
* :class:`Admission` — may they, right now? (rate limits, concurrency, token budgets;
  reserve an estimate before the replica is called, settle the real count afterwards)
* :class:`UsageSink` — record what it cost (durable, never blocks the request).

:mod:`aiforge.platform` provides the real implementations; :class:`OpenAccess` and
:class:`DiscardUsage` serve a gateway run without a platform (benchmarks of the bare
proxy, engine tests).
"""

from __future__ import annotations

from typing import Protocol

from aiforge.types import Principal, Ticket, UsageEvent


class Authenticator(Protocol):
    def authenticate(self, authorization: str | None) -> Principal:
        """Resolve an ``Authorization`` header value (``Bearer sk-...``) or raise AuthError.

        Must answer from memory (a cache the control plane invalidates) and compare secrets
        in constant time.
        """


class Admission(Protocol):
    async def admit(self, principal: Principal, model: str, estimated_tokens: int) -> Ticket:
        """Check every limit and reserve ``estimated_tokens``; raise LimitExceeded if refused."""

    async def settle(self, ticket: Ticket, actual_tokens: int) -> None:
        """Release the concurrency slot and replace the reservation by the real count."""


class UsageSink(Protocol):
    def open(self, provisional: UsageEvent) -> None:
        """A request is about to be sent to a replica. ``provisional`` is its record should
        the gateway die before :meth:`record` (status 502, ``error_type`` =
        :data:`GATEWAY_CRASHED`, the prompt estimate, no completion tokens: what the replica
        did after the crash is unknown). Durable against the process being killed, without
        blocking (journal append)."""

    def record(self, event: UsageEvent) -> None:
        """Durably accept one usage record without blocking (journal append). For an opened
        request it replaces the provisional record."""


OPEN_PRINCIPAL = Principal(
    key_id="anonymous",
    project_id="default",
    organization_id="default",
    role="owner",
    is_platform_admin=True,
)


class OpenAccess:
    """Lets every request through as :data:`OPEN_PRINCIPAL`. For the bare proxy only."""

    def authenticate(self, authorization: str | None) -> Principal:
        return OPEN_PRINCIPAL

    async def admit(self, principal: Principal, model: str, estimated_tokens: int) -> Ticket:
        return Ticket(principal=principal, model=model, reserved_tokens=estimated_tokens)

    async def settle(self, ticket: Ticket, actual_tokens: int) -> None:
        return None


class DiscardUsage:
    def open(self, provisional: UsageEvent) -> None:
        return None

    def record(self, event: UsageEvent) -> None:
        return None
