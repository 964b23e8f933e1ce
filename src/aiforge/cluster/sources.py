"""Where the controller reads desired state, and what the admin API reads back from it.

:class:`DeploymentSource` is implemented by the platform (deployments in the database) and
by :class:`StaticDeployments` (in memory: ``serve --no-auth``, attached replicas, tests).
:class:`ControlPlane` is the controller as the admin API sees it: wake it after a change,
read the live replicas of a deployment.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from aiforge.cluster.deployments import DeploymentSpec

__all__ = ["ControlPlane", "DeploymentSource", "StaticDeployments"]


class DeploymentSource(Protocol):
    async def list_deployments(self) -> list[DeploymentSpec]:
        """Every deployment that should be served now."""


class ControlPlane(Protocol):
    def wake(self) -> None:
        """Desired state changed: reconcile now rather than at the next tick."""

    def replicas_of(self, deployment: str) -> list[dict[str, object]]:
        """The deployment's replicas as :meth:`aiforge.cluster.replicas.Replica.public` shows
        them (live in-flight counts and throughput included); empty if none."""


class StaticDeployments:
    """Deployments held in memory."""

    def __init__(self, specs: Iterable[DeploymentSpec] = ()) -> None:
        self._specs: dict[str, DeploymentSpec] = {s.name: s for s in specs}

    def put(self, spec: DeploymentSpec) -> None:
        self._specs[spec.name] = spec.validate()

    def remove(self, name: str) -> None:
        self._specs.pop(name, None)

    async def list_deployments(self) -> list[DeploymentSpec]:
        return list(self._specs.values())
