"""The fuzz run's target: one real ``aiforge serve`` on the offline demo model (SQLite,
platform on) with two tenants provisioned through the admin API: one whose member key sends
every ``/v1`` case, and a stand-in whose ids (and a deployment with no replicas) the admin
cases name, so they reach real resources without touching what the run itself needs.

The fixture lives here, imported by the test module, not in a ``conftest.py``: the e2e
tests import their own ``conftest`` by name, and a second one would shadow it when both
folders are collected in one run.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fuzz_support import ADMIN_PREFIX, V1_PREFIX

from aiforge.models.demo import DEMO_NAME
from aiforge.testing.server import RemoteAiforgeServer

SERVE_ARGS = ("--engine", "transformers", "--threads", "1", "--max-model-len", "256")
"""A short context bounds what a request that names no token limit can generate."""
SERVER_ENV = {"AIFORGE_MAX_BODY_BYTES": str(256 * 1024)}


@dataclass(frozen=True)
class FuzzTarget:
    """The running server and the credentials and ids the fuzzer uses."""

    server: RemoteAiforgeServer
    project_key: str
    """A member key of a project of its own: every ``/v1`` case authenticates with it."""
    real_path_parameters: Mapping[str, str]
    """Ids of a stand-in tenant's organization, project, user and key, a deployment with no
    replicas, and the served model: path parameters some cases send instead of random ones."""
    shield: Mapping[str, str]
    """Every resource that existed before the stand-ins (the admin key and its project, the
    ``/v1`` tenant, the served deployment), mapped to its stand-in: admin cases that name
    one (schemathesis reuses ids it read in responses) act on the stand-in instead, so the
    run cannot revoke its own keys or scale the served model away."""

    def headers_by_prefix(self) -> dict[str, dict[str, str]]:
        return {
            ADMIN_PREFIX: {"Authorization": f"Bearer {self.server.api_key}"},
            V1_PREFIX: {"Authorization": f"Bearer {self.project_key}"},
        }


@pytest.fixture(scope="session")
def fuzz_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzTarget]:
    root = tmp_path_factory.mktemp("fuzz")
    with RemoteAiforgeServer(
        DEMO_NAME, serve_args=SERVE_ARGS, env=SERVER_ENV, data_dir=root / "data"
    ) as server:
        admin_headers = {"Authorization": f"Bearer {server.api_key}"}
        with httpx.Client(base_url=server.url, headers=admin_headers, timeout=30) as admin:
            project_key = str(_provision(admin, "fuzz-v1")["key"])
            existing = _existing_resources(admin)
            real = _real_path_parameters(admin)
        _wait_until_key_works(server, project_key)
        shield = {value: real[kind] for kind, values in existing.items() for value in values}
        yield FuzzTarget(server, project_key, real_path_parameters=real, shield=shield)


def _created(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code in (200, 201), response.text
    body: dict[str, Any] = response.json()
    return body


def _provision(admin: httpx.Client, name: str) -> dict[str, Any]:
    """An organization, a project with a member user, and a member key: the key's record
    (``key`` is the secret) with the organization, project and user ids."""
    org = _created(admin.post("/admin/v1/organizations", json={"name": name}))
    project = _created(
        admin.post("/admin/v1/projects", json={"name": name, "organization_id": org["id"]})
    )
    members = f"/admin/v1/projects/{project['id']}/members"
    member = _created(admin.put(members, json={"email": f"{name}@example.com", "role": "member"}))
    keys = f"/admin/v1/projects/{project['id']}/keys"
    key = _created(admin.post(keys, json={"name": name, "role": "member"}))
    ids = {"organization_id": org["id"], "project_id": project["id"], "user_id": member["user_id"]}
    return {**key, **ids}


def _existing_resources(admin: httpx.Client) -> dict[str, list[str]]:
    """The ids of every organization, project, user and key, and the deployment names, by
    the path parameter that names them."""
    listed = {
        kind: [str(item[field]) for item in _listed(admin, path)]
        for kind, path, field in (
            ("organization_id", "/admin/v1/organizations", "id"),
            ("project_id", "/admin/v1/projects", "id"),
            ("user_id", "/admin/v1/users", "id"),
            ("name", "/admin/v1/deployments", "name"),
        )
    }
    listed["key_id"] = [
        str(key["id"])
        for project in listed["project_id"]
        for key in _listed(admin, f"/admin/v1/projects/{project}/keys")
    ]
    return listed


def _listed(admin: httpx.Client, path: str) -> list[dict[str, Any]]:
    response = admin.get(path)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()
    return items


def _real_path_parameters(admin: httpx.Client) -> dict[str, str]:
    tenant = _provision(admin, f"fuzz-stand-in-{secrets.token_hex(3)}")
    deployment = "fuzz-stand-in"
    spec = {"model": DEMO_NAME, "replicas": 0}
    _created(admin.put(f"/admin/v1/deployments/{deployment}", json=spec))
    return {
        "organization_id": tenant["organization_id"],
        "project_id": tenant["project_id"],
        "user_id": tenant["user_id"],
        "key_id": tenant["id"],
        "name": deployment,
        "model": DEMO_NAME,
    }


def _wait_until_key_works(server: RemoteAiforgeServer, key: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    headers = {"Authorization": f"Bearer {key}"}
    while httpx.get(server.url_for("v1/models"), headers=headers).status_code != 200:
        assert time.monotonic() < deadline, "the gateway never accepted the new project key"
        time.sleep(0.1)
