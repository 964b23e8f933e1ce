"""Infrastructure: replicas, the runtimes that start them, and their health."""

from aiforge.cluster.replicas import Replica, ReplicaState, ReplicaTable

__all__ = ["Replica", "ReplicaState", "ReplicaTable"]
