"""A key as the authenticator caches it, and the pure check that turns it into a Principal."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from aiforge.platform.domain.keys import hash_token
from aiforge.platform.domain.roles import Role
from aiforge.types import AuthError, Principal

KeyStatus = Literal["active", "expired", "revoked"]


def key_status(
    *, now: datetime, expires_at: datetime | None, revoked_at: datetime | None
) -> KeyStatus:
    if revoked_at is not None and revoked_at <= now:
        return "revoked"
    if expires_at is not None and expires_at <= now:
        return "expired"
    return "active"


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """Everything the request path needs about one key, held in memory."""

    key_id: str
    prefix: str
    secret_hash: str
    project_id: str
    organization_id: str
    role: Role
    is_platform_admin: bool = False
    allowed_models: frozenset[str] | None = None
    region: str | None = None
    expires_at: datetime | None = None
    revoked_at: datetime | None = None

    def principal(self) -> Principal:
        return Principal(
            key_id=self.key_id,
            project_id=self.project_id,
            organization_id=self.organization_id,
            role=self.role,
            is_platform_admin=self.is_platform_admin,
            allowed_models=self.allowed_models,
            region=self.region,
            key_prefix=self.prefix,
        )


def resolve_token(
    token: str, record: KeyRecord | None, *, now: datetime, pepper: bytes
) -> Principal:
    """Check ``token`` against the cached ``record``; raise AuthError if not valid."""
    return resolve_digest(hash_token(token, pepper=pepper), record, now=now)


def resolve_digest(digest: str, record: KeyRecord | None, *, now: datetime) -> Principal:
    """The principal of the key whose keyed hash is ``digest``; raise AuthError if not valid.

    ``record`` is what the cache holds under ``digest`` (None: no such key). The caller
    has hashed the whole token before looking anything up, so the time taken does not
    depend on whether any part of the token (its prefix) names a key; the hashes are still
    compared in constant time, and the status is checked only for a matching key.
    """
    if record is None or not hmac.compare_digest(digest, record.secret_hash):
        raise AuthError("Incorrect API key provided.")
    status = key_status(now=now, expires_at=record.expires_at, revoked_at=record.revoked_at)
    if status == "revoked":
        raise AuthError("This API key has been revoked.", code="revoked_api_key")
    if status == "expired":
        raise AuthError("This API key has expired.", code="expired_api_key")
    return record.principal()
