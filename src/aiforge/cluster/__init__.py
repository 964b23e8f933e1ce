"""Infrastructure: deployments (desired state), replicas, the runtimes that start them and
the controller that reconciles the two."""

from aiforge.cluster.deployments import DeploymentSpec, Placement
from aiforge.cluster.replicas import Replica, ReplicaState

__all__ = ["DeploymentSpec", "Placement", "Replica", "ReplicaState"]
