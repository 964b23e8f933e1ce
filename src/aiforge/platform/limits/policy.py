"""What a key or a project may spend: the limits admission enforces.

A :class:`LimitPolicy` is a plain value. The tenancy layer stores one per API key and one
per project; :class:`aiforge.platform.limits.admission.LimitAdmission` enforces both on
every request (the tighter one wins because both must admit).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LimitPolicy:
    """Per-subject limits. ``None`` means unlimited for that dimension."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    max_concurrent: int | None = None
    tokens_per_day: int | None = None
    tokens_per_month: int | None = None

    def __post_init__(self) -> None:
        for name in LIMIT_FIELDS:
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0 or None, got {value}")

    @property
    def is_unlimited(self) -> bool:
        """True when no dimension is limited (admission can skip the store entirely)."""
        return all(getattr(self, name) is None for name in LIMIT_FIELDS)


LIMIT_FIELDS: tuple[str, ...] = (
    "requests_per_minute",
    "tokens_per_minute",
    "max_concurrent",
    "tokens_per_day",
    "tokens_per_month",
)

UNLIMITED = LimitPolicy()
