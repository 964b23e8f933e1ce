"""Routing: which replica of a deployment serves a request (policies, the replica directory)."""
