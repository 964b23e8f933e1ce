"""A started platform whose admin API is served by uvicorn on a free port, with a fake
control plane attached (the controller is not under test here)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from deployments_support import FakeControlPlane, ServedPlatform, admin_app

from aiforge.config import Settings
from aiforge.platform.bootstrap import build_platform
from aiforge.testing.server import running_app


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
