"""No key hands out more than it holds. Pure decisions over a :class:`Grantor`.

A key that creates or changes a key (its own included) may give it at most its own rights:

* a lifetime no longer than its own — a key that expires cannot clear or extend its own
  expiry, and the keys it creates expire when it does unless they are asked to go sooner;
* limits no looser than its own, dimension by dimension — ``None`` (unlimited) is looser
  than any number, so a limited key cannot clear a limit, and the keys it creates start
  with its own limits;
* a model allowlist within its own (:func:`aiforge.platform.domain.access.narrow_allowlist`)
  and a role no higher than its own (:func:`aiforge.platform.domain.access.check_grant`).

Platform admin keys are the root of every grant and are not bounded here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from aiforge.platform.domain.errors import Forbidden
from aiforge.platform.domain.roles import Role
from aiforge.platform.limits.policy import LIMIT_FIELDS, UNLIMITED, LimitPolicy


@dataclass(frozen=True, slots=True)
class Grantor:
    """What the calling key itself holds (read from the database on the write path)."""

    key_id: str
    role: Role
    is_platform_admin: bool = False
    expires_at: datetime | None = None
    limits: LimitPolicy = UNLIMITED


def new_key_expiry(grantor: Grantor, requested: datetime | None) -> datetime | None:
    """The expiry of a key ``grantor`` creates: ``requested``, or the grantor's own when
    none is asked for; refused when it would outlive the grantor."""
    if grantor.is_platform_admin or grantor.expires_at is None:
        return requested
    if requested is None:
        return grantor.expires_at
    return changed_expiry(grantor, requested)


def changed_expiry(grantor: Grantor, requested: datetime | None) -> datetime | None:
    """A new expiry for an existing key (``None``: never expires); refused when later than
    the grantor's own expiry — so a key cannot clear or extend its own."""
    if grantor.is_platform_admin or grantor.expires_at is None:
        return requested
    if requested is None or requested > grantor.expires_at:
        limit = grantor.expires_at.isoformat()
        what = "a key that never expires" if requested is None else "a later expiry"
        raise Forbidden(
            f"a key that expires at {limit} cannot grant {what}; expires_at must be at most "
            f"{limit}",
            param="expires_at",
            code="exceeds_own_rights",
        )
    return requested


def new_key_limits(grantor: Grantor) -> LimitPolicy | None:
    """The limits a key ``grantor`` creates starts with (``None``: no key limits)."""
    if grantor.is_platform_admin or grantor.limits.is_unlimited:
        return None
    return grantor.limits


def changed_limits(grantor: Grantor, requested: LimitPolicy) -> LimitPolicy:
    """``requested`` if no dimension is looser than the grantor's own; else refused, naming
    the first such dimension."""
    if grantor.is_platform_admin:
        return requested
    for name in LIMIT_FIELDS:
        own: int | None = getattr(grantor.limits, name)
        wanted: int | None = getattr(requested, name)
        if own is None or (wanted is not None and wanted <= own):
            continue
        asked = "unlimited" if wanted is None else str(wanted)
        raise Forbidden(
            f"a key limited to {name}={own} cannot grant {name}={asked}; set it to at most {own}",
            param=name,
            code="exceeds_own_rights",
        )
    return requested
