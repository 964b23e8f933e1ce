"""Routing policies by name; a deployment names its policy (``policy: prefix_affinity``)."""

from __future__ import annotations

import importlib

from aiforge.router.base import RoutingPolicy

__all__ = ["POLICY_CLASSES", "POLICY_NAMES", "UnknownPolicyError", "make_policy"]

POLICY_CLASSES: dict[str, str] = {
    "round_robin": "aiforge.router.policies.round_robin:RoundRobinPolicy",
    "least_outstanding": "aiforge.router.policies.least_outstanding:LeastOutstandingPolicy",
    "prefix_affinity": "aiforge.router.policies.prefix_affinity:PrefixAffinityPolicy",
    "session_affinity": "aiforge.router.policies.session_affinity:SessionAffinityPolicy",
}
POLICY_NAMES = tuple(POLICY_CLASSES)


class UnknownPolicyError(ValueError):
    pass


def make_policy(name: str) -> RoutingPolicy:
    """A new instance of the policy registered as ``name``."""
    try:
        target = POLICY_CLASSES[name]
    except KeyError:
        known = ", ".join(POLICY_NAMES)
        raise UnknownPolicyError(
            f"unknown routing policy {name!r}; choose one of: {known}"
        ) from None
    module_name, _, class_name = target.partition(":")
    cls: type[RoutingPolicy] = getattr(importlib.import_module(module_name), class_name)
    return cls()
