"""Rate limits and token budgets, enforced per API key and per project."""

from aiforge.platform.limits.admission import BudgetUsage, LimitAdmission, LimitsProvider
from aiforge.platform.limits.factory import build_store
from aiforge.platform.limits.policy import LIMIT_FIELDS, UNLIMITED, LimitPolicy
from aiforge.platform.limits.redis_store import RedisStore
from aiforge.platform.limits.store import MemoryStore, Store

__all__ = [
    "LIMIT_FIELDS",
    "UNLIMITED",
    "BudgetUsage",
    "LimitAdmission",
    "LimitPolicy",
    "LimitsProvider",
    "MemoryStore",
    "RedisStore",
    "Store",
    "build_store",
]
