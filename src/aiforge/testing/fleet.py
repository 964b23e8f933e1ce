"""A hand-held fleet: replicas published to a :class:`ReplicaDirectory` the way the
controller publishes them, for tests and benchmarks of the gateway without a controller."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiforge.cluster.deployments import DEFAULT_POLICY
from aiforge.router.directory import DeploymentRoute, ReplicaDirectory, RoutableReplica


@dataclass(slots=True)
class _Deployment:
    policy: str
    projects: frozenset[str] | None
    replicas: dict[str, RoutableReplica] = field(default_factory=dict)
    max_model_len: int | None = None


class StaticFleet:
    """Deployments and replicas set by hand; every change is published at once."""

    def __init__(self, directory: ReplicaDirectory | None = None) -> None:
        self.directory = directory or ReplicaDirectory()
        self._deployments: dict[str, _Deployment] = {}

    def deploy(
        self,
        name: str,
        *,
        policy: str = DEFAULT_POLICY,
        projects: frozenset[str] | None = None,
        max_model_len: int | None = None,
    ) -> None:
        deployment = self._deployments.setdefault(name, _Deployment(policy, projects))
        deployment.policy, deployment.projects = policy, projects
        deployment.max_model_len = max_model_len
        self._publish()

    def add(
        self,
        deployment: str,
        replica_id: str,
        url: str,
        *,
        state: str = "ready",
        dialect: str = "openai",
    ) -> None:
        """Add (or replace) a replica of ``deployment`` (deployed with defaults if new)."""
        target = self._deployments.setdefault(deployment, _Deployment(DEFAULT_POLICY, None))
        target.replicas[replica_id] = RoutableReplica(
            id=replica_id, url=url, state=state, dialect=dialect
        )
        self._publish()

    def set_state(self, replica_id: str, state: str) -> None:
        for deployment in self._deployments.values():
            replica = deployment.replicas.get(replica_id)
            if replica is not None:
                deployment.replicas[replica_id] = RoutableReplica(
                    id=replica.id, url=replica.url, state=state, dialect=replica.dialect
                )
        self._publish()

    def remove(self, replica_id: str) -> None:
        for deployment in self._deployments.values():
            deployment.replicas.pop(replica_id, None)
        self._publish()

    def status(self) -> list[dict[str, object]]:
        """Shaped like the controller's ``status()`` (for ``/health``)."""
        return [
            {
                "name": name,
                "policy": d.policy,
                "replicas": [
                    {
                        "id": r.id,
                        "state": r.state,
                        "url": r.url,
                        "in_flight": self.directory.in_flight(name, r.id),
                    }
                    for r in d.replicas.values()
                ],
            }
            for name, d in self._deployments.items()
        ]

    def _publish(self) -> None:
        self.directory.publish(
            [
                DeploymentRoute(
                    name=name,
                    policy=d.policy,
                    replicas=tuple(d.replicas.values()),
                    projects=d.projects,
                    max_model_len=d.max_model_len,
                )
                for name, d in self._deployments.items()
            ]
        )
