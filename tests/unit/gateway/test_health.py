"""``/health``: a deployment scaled to zero on purpose never makes the gateway unavailable
(found by the fuzz run: one admin call scaling any deployment to 0 turned ``/health`` to 503
for every model), while a deployment that wants replicas and has none still does."""

from __future__ import annotations

from pathlib import Path

import httpx

from aiforge.config import Settings
from aiforge.gateway.access import DiscardUsage, OpenAccess
from aiforge.gateway.app import create_app
from aiforge.testing.fleet import StaticFleet


async def _health(
    fleet: StaticFleet, specs: dict[str, dict[str, object]], tmp: Path
) -> httpx.Response:
    def status() -> list[dict[str, object]]:
        return [{**d, "spec": specs[str(d["name"])]} for d in fleet.status()]

    app = create_app(Settings(data_dir=tmp), directory=fleet.directory, fleet_status=status,
                     authenticator=OpenAccess(), admission=OpenAccess(),
                     usage_sink=DiscardUsage())  # fmt: skip
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gateway"
    ) as client:
        return await client.get("/health")


async def test_a_deployment_scaled_to_zero_leaves_the_gateway_healthy(tmp_path: Path) -> None:
    fleet = StaticFleet()
    fleet.add("served", "r0", "http://127.0.0.1:9")
    fleet.deploy("parked")
    specs: dict[str, dict[str, object]] = {
        "served": {"replicas": 1, "endpoints": []},
        "parked": {"replicas": 0, "endpoints": []},
    }
    health = await _health(fleet, specs, tmp_path)
    assert (health.status_code, health.json()["status"]) == (200, "ok")


async def test_a_deployment_that_wants_replicas_and_has_none_is_unavailable(
    tmp_path: Path,
) -> None:
    fleet = StaticFleet()
    fleet.add("served", "r0", "http://127.0.0.1:9")
    fleet.deploy("starving")
    for spec in ({"replicas": 2, "endpoints": []}, {"replicas": 0, "endpoints": ["http://x"]}):
        specs: dict[str, dict[str, object]] = {"served": {"replicas": 1}, "starving": spec}
        health = await _health(fleet, specs, tmp_path)
        assert (health.status_code, health.json()["status"]) == (503, "unavailable"), spec


async def test_only_parked_deployments_leave_nothing_to_serve(tmp_path: Path) -> None:
    fleet = StaticFleet()
    fleet.deploy("parked")
    health = await _health(fleet, {"parked": {"replicas": 0}}, tmp_path)
    assert health.status_code == 503
