"""Field types every admin request model uses, so nothing out of range reaches the database.

Each type refuses what the storage or the code behind it cannot hold with a 400 that names
the field, instead of a 500 from deep inside: names with invisible characters
(:mod:`aiforge.platform.domain.names`), integers beyond a column's range, and timestamps
that leave the calendar once moved to UTC (``9999-12-31T23:59:59-12:00`` is year 10000 in
UTC; ``0001-01-01T00:00:00+14:00`` is year 0).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, Field

from aiforge.platform.domain.names import normalize_name

NAME_MAX_LENGTH = 200
EMAIL_MAX_LENGTH = 320
REGION_MAX_LENGTH = 64
MODEL_NAME_MAX_LENGTH = 1024
MAX_LIMIT = 10**15
"""The largest limit (requests, tokens, concurrency): far above any real budget, and exact
in every store (Redis scripts count in doubles, exact below 2**53)."""
INT32_MAX = 2**31 - 1
"""The largest value of an ``Integer`` column on PostgreSQL."""
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


def _name(value: str) -> str:
    return normalize_name(value, max_length=NAME_MAX_LENGTH)


def _optional_name(value: str) -> str:
    return normalize_name(value, max_length=NAME_MAX_LENGTH, allow_empty=True)


def _region(value: str) -> str:
    return normalize_name(value, max_length=REGION_MAX_LENGTH, allow_empty=True)


def _model_name(value: str) -> str:
    return normalize_name(value, max_length=MODEL_NAME_MAX_LENGTH)


def _email(value: str) -> str:
    email = normalize_name(value, max_length=EMAIL_MAX_LENGTH)
    if not _EMAIL.match(email):
        raise ValueError("must be an e-mail address (name@domain)")
    return email


def to_utc(value: datetime) -> datetime:
    """``value`` in UTC; a time without a zone is read as UTC. Refuses a time that leaves
    the calendar (years 1-9999) when moved to UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError(
            "is outside the supported range once converted to UTC "
            "(0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z)"
        ) from None


def _aware_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("needs a timezone (e.g. 2030-01-01T00:00:00Z)")
    return to_utc(value)


Name = Annotated[str, Field(min_length=1, max_length=NAME_MAX_LENGTH), AfterValidator(_name)]
"""An organization or project name: NFKC, visible characters only, unique case-folded."""
OptionalName = Annotated[str, Field(max_length=NAME_MAX_LENGTH), AfterValidator(_optional_name)]
"""A display name that may be empty (users, keys)."""
Region = Annotated[str, Field(max_length=REGION_MAX_LENGTH), AfterValidator(_region)]
ModelName = Annotated[
    str, Field(min_length=1, max_length=MODEL_NAME_MAX_LENGTH), AfterValidator(_model_name)
]
Email = Annotated[str, Field(min_length=3, max_length=EMAIL_MAX_LENGTH), AfterValidator(_email)]
AwareTimestamp = Annotated[datetime, AfterValidator(_aware_utc)]
"""A timestamp with a zone, stored in UTC."""
UtcTimestamp = Annotated[datetime, AfterValidator(to_utc)]
"""A timestamp stored in UTC; without a zone it is read as UTC."""
LimitValue = Annotated[int, Field(ge=0, le=MAX_LIMIT)]
ColumnInt = Annotated[int, Field(ge=-INT32_MAX, le=INT32_MAX)]
"""An integer stored in an ``Integer`` column (the service checks its meaning)."""

__all__ = [
    "INT32_MAX",
    "MAX_LIMIT",
    "AwareTimestamp",
    "ColumnInt",
    "Email",
    "LimitValue",
    "ModelName",
    "Name",
    "OptionalName",
    "Region",
    "UtcTimestamp",
    "to_utc",
]
