"""Session-wide tiny replicas for the platform end-to-end tests (one chat, one embedding).

Gateways are per test (they need a fresh database); the replicas are shared because they
carry no platform state and loading them is the slow part.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from platform_e2e_support import CHAT_MODEL, EMBED_MODEL, RunningReplica, running_replica

from aiforge.testing.models import tiny_qwen3, tiny_qwen3_embedding


@pytest.fixture(scope="session")
def chat_replica(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningReplica]:
    root = tmp_path_factory.mktemp("platform-e2e-chat")
    model = tiny_qwen3(root / "tiny")
    with running_replica(model, CHAT_MODEL, root / "logs") as replica:
        yield replica


@pytest.fixture(scope="session")
def embedding_replica(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningReplica]:
    root = tmp_path_factory.mktemp("platform-e2e-embed")
    model = tiny_qwen3_embedding(root / "tiny-embed")
    with running_replica(model, EMBED_MODEL, root / "logs", embedding=True) as replica:
        yield replica
