"""API key format, hashing and verification. Pure apart from the OS random source.

A key looks like ``sk-af-<prefix>_<secret>``: the 12-character ``prefix`` is a lookup
handle, safe to store, show in lists and write to logs; the 43-character ``secret`` (256
random bits) is shown once at creation and never stored. The database keeps
HMAC-SHA256(pepper, whole token): with 256 bits of entropy a fast keyed hash is enough
(no password-stretching needed), and the pepper means a stolen database alone cannot even
confirm a guessed key.

Keys set from outside (``AIFORGE_ADMIN_KEY``) may have any shape; their lookup prefix is
derived from a hash of the token so they live in the same cache.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from dataclasses import dataclass

KEY_SCHEME = "sk-af-"
PREFIX_LENGTH = 12
_PREFIX_ALPHABET = string.ascii_lowercase + string.digits
DEFAULT_PEPPER = b"aiforge-api-key-v1"
"""Domain separation when no server pepper is configured."""
MIN_EXTERNAL_KEY_LENGTH = 16


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A new key: ``token`` is shown to its owner once; only ``secret_hash`` is stored."""

    token: str
    prefix: str
    secret_hash: str


def new_prefix() -> str:
    return "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(PREFIX_LENGTH))


def issue_key(*, pepper: bytes = DEFAULT_PEPPER) -> IssuedKey:
    """Generate a fresh key and its stored hash."""
    prefix = new_prefix()
    token = f"{KEY_SCHEME}{prefix}_{secrets.token_urlsafe(32)}"
    return IssuedKey(token=token, prefix=prefix, secret_hash=hash_token(token, pepper=pepper))


def external_key(token: str, *, pepper: bytes = DEFAULT_PEPPER) -> IssuedKey:
    """Adopt a key chosen by the operator (``AIFORGE_ADMIN_KEY``)."""
    if len(token) < MIN_EXTERNAL_KEY_LENGTH or any(c.isspace() for c in token):
        raise ValueError(
            f"an API key must be at least {MIN_EXTERNAL_KEY_LENGTH} characters with no spaces"
        )
    prefix = lookup_prefix(token)
    return IssuedKey(token=token, prefix=prefix, secret_hash=hash_token(token, pepper=pepper))


def lookup_prefix(token: str) -> str:
    """The cache key of ``token``: its embedded prefix, or one derived from its hash."""
    if token.startswith(KEY_SCHEME):
        prefix, sep, secret = token[len(KEY_SCHEME) :].partition("_")
        if sep and secret and len(prefix) == PREFIX_LENGTH:
            return prefix
    return "x" + hashlib.sha256(token.encode()).hexdigest()[: PREFIX_LENGTH - 1]


def hash_token(token: str, *, pepper: bytes = DEFAULT_PEPPER) -> str:
    return hmac.digest(pepper, token.encode(), "sha256").hex()  # one-shot: OpenSSL's HMAC in C


def verify_token(token: str, secret_hash: str, *, pepper: bytes = DEFAULT_PEPPER) -> bool:
    """Constant-time comparison of ``token``'s hash with the stored one."""
    return hmac.compare_digest(hash_token(token, pepper=pepper), secret_hash)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    return token or None


def display_key(prefix: str) -> str:
    """How a key is shown in lists and logs: never more than its prefix."""
    return f"{KEY_SCHEME}{prefix}_…" if not prefix.startswith("x") else f"{prefix}…"
