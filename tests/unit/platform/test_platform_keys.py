"""Key format, hashing and verification (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from aiforge.platform.domain.key_record import KeyRecord, key_status, resolve_token
from aiforge.platform.domain.keys import (
    KEY_SCHEME,
    PREFIX_LENGTH,
    bearer_token,
    display_key,
    external_key,
    hash_token,
    issue_key,
    lookup_prefix,
    verify_token,
)
from aiforge.types import AuthError

NOW = datetime(2030, 1, 1, tzinfo=UTC)
PEPPER = b"test-pepper"


def test_issued_keys_embed_their_prefix_and_store_only_a_hash() -> None:
    issued = issue_key(pepper=PEPPER)

    assert issued.token.startswith(f"{KEY_SCHEME}{issued.prefix}_")
    assert len(issued.prefix) == PREFIX_LENGTH
    assert lookup_prefix(issued.token) == issued.prefix
    secret = issued.token.split("_", 1)[1]
    assert len(secret) >= 43  # 256 random bits
    assert secret not in issued.secret_hash
    assert issued.token not in issued.secret_hash
    assert verify_token(issued.token, issued.secret_hash, pepper=PEPPER)


def test_issued_keys_are_unique() -> None:
    tokens = {issue_key().token for _ in range(200)}
    prefixes = {lookup_prefix(token) for token in tokens}
    assert len(tokens) == 200
    assert len(prefixes) == 200


def test_verification_needs_the_exact_token_and_the_same_pepper() -> None:
    issued = issue_key(pepper=PEPPER)

    assert not verify_token(issued.token + "x", issued.secret_hash, pepper=PEPPER)
    assert not verify_token(issued.token[:-1], issued.secret_hash, pepper=PEPPER)
    assert not verify_token(issued.token, issued.secret_hash, pepper=b"other-pepper")
    assert hash_token(issued.token, pepper=PEPPER) != hash_token(issued.token, pepper=b"x")


def test_external_keys_get_a_derived_prefix_and_must_be_long_enough() -> None:
    adopted = external_key("my-automation-admin-key", pepper=PEPPER)

    assert adopted.prefix == lookup_prefix("my-automation-admin-key")
    assert adopted.prefix.startswith("x")
    assert len(adopted.prefix) == PREFIX_LENGTH
    assert verify_token("my-automation-admin-key", adopted.secret_hash, pepper=PEPPER)
    with pytest.raises(ValueError, match="at least"):
        external_key("short")
    with pytest.raises(ValueError, match="no spaces"):
        external_key("a key with spaces in it")


def test_a_malformed_aiforge_key_is_looked_up_by_hash_not_by_a_forged_prefix() -> None:
    assert lookup_prefix("sk-af-abc_def").startswith("x")
    assert lookup_prefix("sk-af-abcdefghijkl").startswith("x")


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer sk-af-abc", "sk-af-abc"),
        ("bearer   sk-af-abc  ", "sk-af-abc"),
        ("Basic abc", None),
        ("Bearer", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer_token(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


def test_display_shows_only_the_prefix() -> None:
    issued = issue_key()
    shown = display_key(issued.prefix)
    assert issued.prefix in shown
    assert issued.token.split("_", 1)[1] not in shown


def test_resolve_token_returns_the_principal_of_a_valid_key() -> None:
    issued = issue_key(pepper=PEPPER)
    record = KeyRecord(
        key_id="key_1",
        prefix=issued.prefix,
        secret_hash=issued.secret_hash,
        project_id="proj_1",
        organization_id="org_1",
        role="admin",
        allowed_models=frozenset({"qwen3"}),
        region="eu",
    )

    principal = resolve_token(issued.token, record, now=NOW, pepper=PEPPER)

    assert principal.key_id == "key_1"
    assert principal.project_id == "proj_1"
    assert principal.role == "admin"
    assert not principal.is_platform_admin
    assert principal.allowed_models == frozenset({"qwen3"})
    assert principal.region == "eu"
    assert principal.key_prefix == issued.prefix


@pytest.mark.parametrize(
    ("expires_at", "revoked_at", "code"),
    [
        (NOW - timedelta(seconds=1), None, "expired_api_key"),
        (NOW, None, "expired_api_key"),
        (None, NOW - timedelta(days=1), "revoked_api_key"),
    ],
)
def test_resolve_token_refuses_expired_and_revoked_keys(
    expires_at: datetime | None, revoked_at: datetime | None, code: str
) -> None:
    issued = issue_key(pepper=PEPPER)
    record = KeyRecord(
        key_id="key_1",
        prefix=issued.prefix,
        secret_hash=issued.secret_hash,
        project_id="p",
        organization_id="o",
        role="member",
        expires_at=expires_at,
        revoked_at=revoked_at,
    )
    with pytest.raises(AuthError) as refused:
        resolve_token(issued.token, record, now=NOW, pepper=PEPPER)
    assert refused.value.status == 401
    assert refused.value.code == code


def test_resolve_token_refuses_unknown_and_wrong_secrets_alike() -> None:
    issued = issue_key(pepper=PEPPER)
    record = KeyRecord(
        key_id="k",
        prefix=issued.prefix,
        secret_hash=issued.secret_hash,
        project_id="p",
        organization_id="o",
        role="member",
    )
    forged = f"{KEY_SCHEME}{issued.prefix}_{'A' * 43}"
    errors = []
    for token, candidate in ((forged, record), (issued.token, None)):
        with pytest.raises(AuthError) as refused:
            resolve_token(token, candidate, now=NOW, pepper=PEPPER)
        errors.append((refused.value.status, refused.value.code, refused.value.message))
    assert errors[0] == errors[1] == (401, "invalid_api_key", "Incorrect API key provided.")


def test_key_status() -> None:
    later = NOW + timedelta(days=1)
    assert key_status(now=NOW, expires_at=None, revoked_at=None) == "active"
    assert key_status(now=NOW, expires_at=later, revoked_at=None) == "active"
    assert key_status(now=later, expires_at=NOW, revoked_at=None) == "expired"
    assert key_status(now=NOW, expires_at=None, revoked_at=NOW) == "revoked"
