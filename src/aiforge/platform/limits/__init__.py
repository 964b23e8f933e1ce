"""Rate limits and token budgets, enforced per API key and per project."""

from aiforge.platform.limits.policy import LIMIT_FIELDS, UNLIMITED, LimitPolicy

__all__ = ["LIMIT_FIELDS", "UNLIMITED", "LimitPolicy"]
