"""Local networking helpers for replicas."""

from __future__ import annotations

import socket

__all__ = ["free_port"]


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free now (bind to 0, read it, release it).

    Racy by nature (another process may take it before the replica binds); a replica that
    loses the race fails to start and the controller restarts it on a fresh port.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port
