"""No key grants more than it holds: expiry, limits (pure decisions)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from aiforge.platform.domain.errors import Forbidden
from aiforge.platform.domain.grants import (
    Grantor,
    changed_expiry,
    changed_limits,
    new_key_expiry,
    new_key_limits,
)
from aiforge.platform.limits.policy import UNLIMITED, LimitPolicy

EXPIRES = datetime(2030, 1, 1, tzinfo=UTC)
LIMITS = LimitPolicy(requests_per_minute=10, tokens_per_day=1000)
BOUNDED = Grantor(key_id="key_a", role="admin", expires_at=EXPIRES, limits=LIMITS)
UNBOUNDED = Grantor(key_id="key_b", role="admin")
PLATFORM = Grantor(
    key_id="key_p", role="owner", is_platform_admin=True, expires_at=EXPIRES, limits=LIMITS
)


def test_a_new_key_expires_with_its_grantor_unless_asked_to_go_sooner() -> None:
    sooner = EXPIRES - timedelta(days=1)
    assert new_key_expiry(BOUNDED, None) == EXPIRES
    assert new_key_expiry(BOUNDED, sooner) == sooner
    assert new_key_expiry(BOUNDED, EXPIRES) == EXPIRES
    with pytest.raises(Forbidden) as refused:
        new_key_expiry(BOUNDED, EXPIRES + timedelta(seconds=1))
    assert refused.value.param == "expires_at"


def test_an_expiring_key_cannot_clear_or_extend_an_expiry() -> None:
    for wanted in (None, EXPIRES + timedelta(days=365)):
        with pytest.raises(Forbidden, match="expires at"):
            changed_expiry(BOUNDED, wanted)
    assert changed_expiry(BOUNDED, EXPIRES - timedelta(hours=1)) == EXPIRES - timedelta(hours=1)


def test_keys_without_an_expiry_and_platform_admins_grant_any_lifetime() -> None:
    later = EXPIRES + timedelta(days=365)
    for grantor in (UNBOUNDED, PLATFORM):
        assert new_key_expiry(grantor, None) is None
        assert changed_expiry(grantor, None) is None
        assert changed_expiry(grantor, later) == later


def test_a_new_key_starts_with_its_grantors_limits() -> None:
    assert new_key_limits(BOUNDED) == LIMITS
    assert new_key_limits(UNBOUNDED) is None
    assert new_key_limits(PLATFORM) is None


@pytest.mark.parametrize(
    ("wanted", "param"),
    [
        (UNLIMITED, "requests_per_minute"),  # clearing a limit is raising it to infinity
        (LimitPolicy(requests_per_minute=11, tokens_per_day=1000), "requests_per_minute"),
        (LimitPolicy(requests_per_minute=10), "tokens_per_day"),
        (LimitPolicy(requests_per_minute=1, tokens_per_day=1001), "tokens_per_day"),
    ],
)
def test_limits_looser_than_the_grantors_are_refused(wanted: LimitPolicy, param: str) -> None:
    with pytest.raises(Forbidden) as refused:
        changed_limits(BOUNDED, wanted)
    assert refused.value.param == param
    assert refused.value.code == "exceeds_own_rights"


def test_limits_as_tight_or_tighter_are_granted_and_other_dimensions_are_free() -> None:
    tighter = LimitPolicy(
        requests_per_minute=5, tokens_per_day=1000, tokens_per_minute=10**9, max_concurrent=2
    )
    assert changed_limits(BOUNDED, tighter) == tighter
    assert changed_limits(BOUNDED, LIMITS) == LIMITS
    assert changed_limits(UNBOUNDED, UNLIMITED) == UNLIMITED
    assert changed_limits(PLATFORM, UNLIMITED) == UNLIMITED
