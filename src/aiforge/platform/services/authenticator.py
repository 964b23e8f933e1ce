"""The platform's :class:`aiforge.gateway.access.Authenticator`: API keys from memory.

Every active key (and every key's and project's limits) is held in an immutable snapshot,
swapped whole on reload, so ``authenticate`` is one HMAC plus a dict lookup and never
touches the database. Keys are found by the keyed hash of the whole token — computed
before anything is looked up — never by the prefix the token claims, so how long a
refusal takes says nothing about which prefixes exist. The snapshot is reloaded

* at once, when this process's admin API changes a key or a limit (:meth:`reload`), and
* within ``refresh_interval_s`` when another gateway sharing the database does: a
  background task polls the ``access_version`` counter every admin change bumps.

Secrets are compared in constant time; only key prefixes are ever logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy.orm import Session, sessionmaker

from aiforge.platform.db.tenancy import KeyLimitRow, ProjectLimitRow
from aiforge.platform.domain.key_record import KeyRecord, resolve_digest
from aiforge.platform.domain.keys import DEFAULT_PEPPER, bearer_token, hash_token, lookup_prefix
from aiforge.platform.domain.roles import parse_role
from aiforge.platform.limits.policy import LIMIT_FIELDS, UNLIMITED, LimitPolicy
from aiforge.platform.services import repository as repo
from aiforge.types import AuthError, Principal

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def policy_from_row(row: KeyLimitRow | ProjectLimitRow | None) -> LimitPolicy:
    if row is None:
        return UNLIMITED
    return LimitPolicy(**{name: getattr(row, name) for name in LIMIT_FIELDS})


@dataclass(frozen=True, slots=True)
class AccessSnapshot:
    """Keys by their stored keyed hash and limits by subject, as of ``version``."""

    version: int = -1
    keys: dict[str, KeyRecord] = field(default_factory=dict)
    key_limits: dict[str, LimitPolicy] = field(default_factory=dict)
    project_limits: dict[str, LimitPolicy] = field(default_factory=dict)


def load_snapshot(session: Session) -> AccessSnapshot:
    """Read every active key and every limit (one consistent read)."""
    version = repo.access_version(session)
    keys: dict[str, KeyRecord] = {}
    key_limits: dict[str, LimitPolicy] = {}
    for row, organization_id, limits in repo.cacheable_keys(session):
        keys[row.secret_hash] = KeyRecord(
            key_id=row.id,
            prefix=row.prefix,
            secret_hash=row.secret_hash,
            project_id=row.project_id,
            organization_id=organization_id,
            role=parse_role(row.role),
            is_platform_admin=row.is_platform_admin,
            allowed_models=None if row.allowed_models is None else frozenset(row.allowed_models),
            region=row.region,
            expires_at=row.expires_at,
            revoked_at=row.revoked_at,
        )
        if limits is not None:
            key_limits[row.id] = policy_from_row(limits)
    project_limits = {
        row.project_id: policy_from_row(row) for row in repo.all_project_limits(session)
    }
    return AccessSnapshot(
        version=version, keys=keys, key_limits=key_limits, project_limits=project_limits
    )


class PlatformAuthenticator:
    """Authenticates API keys and answers each principal's limits, from memory."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        pepper: bytes = DEFAULT_PEPPER,
        clock: Clock = _utc_now,
        refresh_interval_s: float = 1.0,
    ) -> None:
        self._sessions = sessions
        self._pepper = pepper
        self._clock = clock
        self._refresh_interval_s = refresh_interval_s
        self._snapshot = AccessSnapshot()
        self._swap_lock = threading.Lock()
        self._poller: asyncio.Task[None] | None = None

    # -- the request path (memory only) -----------------------------------------
    def authenticate(self, authorization: str | None) -> Principal:
        token = bearer_token(authorization)
        if token is None:
            raise AuthError(
                "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.",
                code="missing_api_key",
            )
        digest = hash_token(token, pepper=self._pepper)
        record = self._snapshot.keys.get(digest)
        try:
            return resolve_digest(digest, record, now=self._clock())
        except AuthError as error:
            logger.info("refused API key %s…: %s", lookup_prefix(token), error.code)
            raise

    def limits_for(self, principal: Principal) -> tuple[LimitPolicy, LimitPolicy]:
        """(the key's policy, its project's policy); unlimited where none is set."""
        snapshot = self._snapshot
        return (
            snapshot.key_limits.get(principal.key_id, UNLIMITED),
            snapshot.project_limits.get(principal.project_id, UNLIMITED),
        )

    @property
    def version(self) -> int:
        return self._snapshot.version

    # -- the control plane ----------------------------------------------------------
    def reload(self) -> None:
        """Replace the snapshot with the database's current keys and limits."""
        with self._sessions() as session:
            snapshot = load_snapshot(session)
        with self._swap_lock:
            # A slower concurrent reload (the poller) must not put back an older snapshot.
            if snapshot.version < self._snapshot.version:
                return
            self._snapshot = snapshot
        logger.debug(
            "key cache reloaded: %d keys, version %d", len(snapshot.keys), snapshot.version
        )

    def refresh_if_changed(self) -> bool:
        """Reload when another process changed keys or limits. True if it reloaded."""
        with self._sessions() as session:
            version = repo.access_version(session)
        if version == self._snapshot.version:
            return False
        self.reload()
        return True

    async def start(self) -> None:
        await asyncio.to_thread(self.reload)
        if self._poller is None and self._refresh_interval_s > 0:
            self._poller = asyncio.create_task(self._poll(), name="aiforge-key-cache-refresh")

    async def stop(self) -> None:
        poller, self._poller = self._poller, None
        if poller is not None:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_interval_s)
            try:
                await asyncio.to_thread(self.refresh_if_changed)
            except Exception:  # keep serving from the last snapshot while the DB is away
                logger.warning(
                    "key cache refresh failed; serving the previous snapshot", exc_info=True
                )
