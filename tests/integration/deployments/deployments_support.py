"""Helpers for the deployments integration tests: a fake control plane, a served platform."""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx
from fastapi import FastAPI

from aiforge.platform.bootstrap import PlatformRuntime


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
