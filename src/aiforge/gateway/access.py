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

from dataclasses import dataclass, field
from typing import Literal, Protocol

Role = Literal["owner", "admin", "member", "viewer"]
RequestKind = Literal["chat", "completion", "embedding"]


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller behind an API key."""

    key_id: str
    project_id: str
    organization_id: str
    role: Role
    is_platform_admin: bool = False
    """The bootstrap admin key: may manage every organization."""
    allowed_models: frozenset[str] | None = None
    """None: every model."""
    region: str | None = None
    key_prefix: str = ""
    """The displayable, non-secret start of the key (for logs)."""


@dataclass(slots=True)
class Ticket:
    """What admission reserved for one request; handed back to :meth:`Admission.settle`."""

    principal: Principal
    model: str
    reserved_tokens: int
    state: dict[str, object] = field(default_factory=dict)
    """Implementation-owned data (counter keys, window ids)."""


@dataclass(frozen=True, slots=True)
class UsageEvent:
    """One request's cost, as the gateway saw it. Exactly one per request that reached a replica
    (and one per request refused or failed before it, with status set accordingly)."""

    request_id: str
    key_id: str
    project_id: str
    organization_id: str
    model: str
    kind: RequestKind
    status_code: int
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    deployment: str = ""
    replica: str = ""
    ttft_ms: float | None = None
    latency_ms: float = 0.0
    stream: bool = False
    cancelled: bool = False
    started_at: float = 0.0
    """Unix time the gateway received the request."""
    error_type: str | None = None


class AuthError(Exception):
    """No valid key: 401 (or 403 with ``status=403`` when the key may not use the model)."""

    def __init__(self, message: str, *, status: int = 401, code: str = "invalid_api_key") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code


class LimitExceeded(Exception):
    """A rate limit or quota refused the request: OpenAI's 429 with ``Retry-After``."""

    def __init__(self, limit_name: str, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.limit_name = limit_name
        self.message = message
        self.retry_after_s = retry_after_s


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


GATEWAY_CRASHED = "gateway_crashed"
"""``error_type`` of the record of a request the gateway died while serving."""


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
