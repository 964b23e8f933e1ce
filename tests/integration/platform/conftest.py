"""A started platform behind the real gateway app, served by uvicorn on a free port."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from aiforge.config import Settings
from aiforge.gateway.app import create_app
from aiforge.platform.bootstrap import PlatformRuntime, build_platform
from aiforge.router.directory import ReplicaDirectory
from aiforge.testing.server import running_app


@dataclass
class AdminClient:
    """An HTTP client for the admin API, plus the runtime behind it."""

    http: httpx.AsyncClient
    runtime: PlatformRuntime
    admin_key: str
    app: FastAPI

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.admin_key}"}


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=database_url)


@pytest.fixture
async def admin(settings: Settings) -> AsyncIterator[AdminClient]:
    runtime = build_platform(settings)
    await runtime.start()
    assert runtime.new_admin_key is not None
    app = create_app(
        settings,
        directory=ReplicaDirectory(),
        authenticator=runtime.authenticator,
        admission=runtime.admission,
        usage_sink=runtime.usage_sink,
        extra_routers=runtime.routers,
    )
    try:
        async with running_app(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
            yield AdminClient(http=http, runtime=runtime, admin_key=runtime.new_admin_key, app=app)
    finally:
        await runtime.stop()


@dataclass(frozen=True)
class Tenant:
    """An organization with one project, a user in it, and keys of several roles."""

    organization_id: str
    project_id: str
    user_id: str
    keys: dict[str, dict[str, Any]]
    """Created keys by role (``key`` holds the secret)."""

    def token(self, role: str = "owner") -> str:
        return str(self.keys[role]["key"])

    def key_id(self, role: str = "owner") -> str:
        return str(self.keys[role]["id"])


async def create_tenant(
    admin: AdminClient, name: str, *, organization_id: str | None = None
) -> Tenant:
    """Provision through the admin API with the platform admin key."""
    http, headers = admin.http, admin.headers()
    if organization_id is None:
        response = await http.post("/admin/v1/organizations", json={"name": name}, headers=headers)
        assert response.status_code == 201, response.text
        organization_id = response.json()["id"]
    response = await http.post(
        "/admin/v1/projects",
        json={"name": name, "organization_id": organization_id},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    project_id = response.json()["id"]
    response = await http.put(
        f"/admin/v1/projects/{project_id}/members",
        json={"email": f"{name}@example.com", "role": "admin"},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    user_id = response.json()["user_id"]
    keys: dict[str, dict[str, Any]] = {}
    for role in ("owner", "admin", "member", "viewer"):
        response = await http.post(
            f"/admin/v1/projects/{project_id}/keys",
            json={"name": f"{name}-{role}", "role": role},
            headers=headers,
        )
        assert response.status_code == 201, response.text
        keys[role] = response.json()
    return Tenant(organization_id, project_id, user_id, keys)


@pytest.fixture
def tenant_factory(admin: AdminClient) -> Any:
    async def make(name: str, *, organization_id: str | None = None) -> Tenant:
        return await create_tenant(admin, name, organization_id=organization_id)

    return make
