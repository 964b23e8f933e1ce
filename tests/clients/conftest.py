"""Client-compatibility fixtures: one real ``aiforge serve`` for the whole session.

It serves the offline demo models as a user would set them up: ``aiforge serve --model
demo`` for chat, then ``aiforge deploy demo-embedding`` for ``/v1/embeddings``. Every client
calls it with a project member key (not the admin key), on 127.0.0.1.

The embedding deployment is its own fixture, so only embedding tests wait for (or fail on)
it. Clients that cannot share the project venv run as subprocesses (:mod:`clients_support`).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from clients_support import CHAT_MODEL, EMBEDDING_MODEL, ClientTarget

from aiforge.testing.server import RemoteAiforgeServer

SERVE_ARGS = ("--engine", "transformers", "--threads", "1", "--max-model-len", "4096")
DEPLOY_TIMEOUT_S = 180.0


@pytest.fixture(scope="session")
def aiforge_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RemoteAiforgeServer]:
    """``aiforge serve --model demo`` (platform on: keys, metering)."""
    root = tmp_path_factory.mktemp("clients")
    with RemoteAiforgeServer(CHAT_MODEL, serve_args=SERVE_ARGS, data_dir=root / "data") as server:
        yield server


@pytest.fixture(scope="session")
def target(aiforge_server: RemoteAiforgeServer) -> ClientTarget:
    """The chat model behind a fresh project's member key."""
    key = _provision_project_key(aiforge_server, "client-compat")
    return ClientTarget(base_url=aiforge_server.base_url, api_key=key)


@pytest.fixture(scope="session")
def embedding_target(aiforge_server: RemoteAiforgeServer, target: ClientTarget) -> ClientTarget:
    """``target`` once ``demo-embedding`` is deployed (with the CLI) and has a ready replica."""
    _deploy(aiforge_server, EMBEDDING_MODEL)
    return target


def _deploy(server: RemoteAiforgeServer, model: str) -> None:
    """``aiforge deploy MODEL``, then wait until ``/health`` shows a ready replica of it."""
    argv = [sys.executable, "-m", "aiforge.cli", "deploy", model, "--engine", "transformers",
            "--threads", "1", "--url", server.url, "--api-key", server.api_key]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        pytest.fail(f"aiforge deploy {model} failed ({done.returncode}):\n{done.stderr}")
    deadline = time.monotonic() + DEPLOY_TIMEOUT_S
    while not _ready(server, model):
        if time.monotonic() > deadline:
            pytest.fail(f"{model} had no ready replica after {DEPLOY_TIMEOUT_S:.0f}s")
        time.sleep(0.5)


def _ready(server: RemoteAiforgeServer, name: str) -> bool:
    deployments: list[dict[str, Any]] = server.health().get("deployments", [])
    return any(d["name"] == name and d.get("ready_replicas", 0) > 0 for d in deployments)


def _provision_project_key(server: RemoteAiforgeServer, name: str) -> str:
    """An organization, a project and a member key, through the admin API; the key's secret
    once the gateway accepts it."""
    headers = {"Authorization": f"Bearer {server.api_key}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=30.0) as admin:
        org = _created(admin.post("/admin/v1/organizations", json={"name": name}))
        project = _created(
            admin.post("/admin/v1/projects", json={"name": name, "organization_id": org["id"]})
        )
        record = _created(
            admin.post(
                f"/admin/v1/projects/{project['id']}/keys", json={"name": name, "role": "member"}
            )
        )
    key: str = record["key"]
    deadline = time.monotonic() + 15.0
    auth = {"Authorization": f"Bearer {key}"}
    while httpx.get(server.url_for("v1/models"), headers=auth).status_code != 200:
        assert time.monotonic() < deadline, "the gateway never accepted the new project key"
        time.sleep(0.1)
    return key


def _created(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code in (200, 201), response.text
    body: dict[str, Any] = response.json()
    return body
