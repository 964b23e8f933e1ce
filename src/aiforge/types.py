"""Types shared by the gateway and the platform: who is calling, what a request cost,
and the refusals both layers raise. The bottom layer: imports nothing from aiforge."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "GATEWAY_CRASHED",
    "AuthError",
    "LimitExceeded",
    "Principal",
    "RequestKind",
    "Ticket",
    "UsageEvent",
]

RequestKind = Literal["chat", "completion", "embedding", "rerank", "score"]


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller behind an API key."""

    key_id: str
    project_id: str
    organization_id: str
    role: str
    """The key's role in its project (the platform's ``Role``: owner, admin, member, viewer)."""
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


@dataclass(slots=True)
class UsageEvent:
    """One request's cost, as the gateway saw it. Exactly one per request that reached a replica
    (and one per request refused or failed before it, with status set accordingly).

    A value: never changed once made (not ``frozen``, which would cost every request two
    microseconds per event on the gateway's hot path)."""

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


GATEWAY_CRASHED = "gateway_crashed"
"""``error_type`` of the record of a request the gateway died while serving."""
