"""Infrastructure: deployments (desired state), the controller that reconciles them, runtimes
that start replicas, and the replica records the controller keeps."""
