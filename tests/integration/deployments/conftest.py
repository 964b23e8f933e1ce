"""A started platform whose admin API is served by uvicorn on a free port, with a fake
control plane attached (the controller is not under test here)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from aiforge.config import Settings
from aiforge.platform.bootstrap import PlatformRuntime, build_platform
from aiforge.testing.server import running_app


@dataclass
class FakeControlPlane:
    """Counts wake-ups; serves the replicas a test puts in ``replicas``."""

    wakes: int = 0
    replicas: dict[str, list[dict[str, object]]] = field(default_factory=dict)

    def wake(self) -> None:
        self.wakes += 1

    def replicas_of(self, deployment: str) -> list[dict[str, object]]:
        return list(self.replicas.get(deployment, []))


@dataclass
class ServedPlatform:
    http: httpx.AsyncClient
    url: str
    runtime: PlatformRuntime
    admin_key: str
    control_plane: FakeControlPlane

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.admin_key}"}

    async def project_key(self, name: str) -> tuple[str, str]:
        """A new project in the default organization and an owner key of it: (id, key)."""
        assert self.runtime.default is not None
        response = await self.http.post(
            "/admin/v1/projects",
            json={"name": name, "organization_id": self.runtime.default.organization_id},
            headers=self.headers(),
        )
        assert response.status_code == 201, response.text
        project_id = str(response.json()["id"])
        response = await self.http.post(
            f"/admin/v1/projects/{project_id}/keys", json={"role": "owner"}, headers=self.headers()
        )
        assert response.status_code == 201, response.text
        return project_id, str(response.json()["key"])


def admin_app(runtime: PlatformRuntime) -> FastAPI:
    """Only the admin API: the routers the platform builds, authenticated by its cache."""
    app = FastAPI()
    app.state.authenticator = runtime.authenticator
    for router in runtime.routers:
        app.include_router(router)
    return app


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=database_url)


@pytest.fixture
async def served(settings: Settings) -> AsyncIterator[ServedPlatform]:
    runtime = build_platform(settings)
    await runtime.start()
    assert runtime.new_admin_key is not None
    control_plane = FakeControlPlane()
    runtime.attach_control_plane(control_plane)
    try:
        async with (
            running_app(admin_app(runtime)) as url,
            httpx.AsyncClient(base_url=url, timeout=30) as http,
        ):
            yield ServedPlatform(http, url, runtime, runtime.new_admin_key, control_plane)
    finally:
        await runtime.stop()
