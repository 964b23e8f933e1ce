"""The controller loop with a fake runtime and a fake clock, and what it publishes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from aiforge.cluster.controller import Controller, ControllerConfig, SettleError
from aiforge.cluster.deployments import DeploymentSpec
from aiforge.cluster.health import HttpEndpointProber
from aiforge.cluster.reconcile import ReconcileConfig
from aiforge.cluster.sources import StaticDeployments
from aiforge.router.base import RoutingRequest
from aiforge.router.directory import DeploymentRouter, ReplicaDirectory
from aiforge.testing.fake_runtime import FakeClock, FakeEndpointProber, FakeRuntime

RECONCILE = ReconcileConfig(
    restart_backoff_base_s=1.0, max_consecutive_failures=3, drain_timeout_s=30.0
)


class Fleet:
    def __init__(self, *specs: DeploymentSpec) -> None:
        self.source = StaticDeployments(specs)
        self.runtime = FakeRuntime()
        self.directory = ReplicaDirectory()
        self.clock = FakeClock()
        self.prober = FakeEndpointProber()
        self.lines: list[str] = []
        self.controller = Controller(
            self.source, self.runtime, self.directory, clock=self.clock,
            config=ControllerConfig(reconcile=RECONCILE, tick_s=0.01),
            progress=self.lines.append, prober=self.prober,
        )  # fmt: skip

    async def tick(self, times: int = 1) -> None:
        """Reconcile and let the starts and stops it launched finish."""
        for _ in range(times):
            await self.controller.reconcile_once()
            await self.controller.wait_for_tasks()

    def states(self, deployment: str = "demo") -> dict[str, str]:
        return {str(r["id"]): str(r["state"]) for r in self.controller.replicas_of(deployment)}

    def router(self, deployment: str = "demo") -> DeploymentRouter:
        router = self.directory.router(deployment)
        assert router is not None
        return router


def demo(replicas: int = 1, *, model: str = "m", **kw: object) -> DeploymentSpec:
    return DeploymentSpec(name="demo", model=model, replicas=replicas, **kw)  # type: ignore[arg-type]


async def test_starts_replicas_and_publishes_them_once_ready() -> None:
    fleet = Fleet(demo(2))
    await fleet.tick()
    assert fleet.runtime.start_calls == ["demo-0", "demo-1"]
    assert fleet.states() == {"demo-0": "starting", "demo-1": "starting"}
    assert fleet.router().ready_count == 0
    assert fleet.directory.models() == ["demo"], "a deployment is listed before it is ready"
    fleet.clock.advance(3.2)
    await fleet.tick()
    assert fleet.states() == {"demo-0": "ready", "demo-1": "ready"}
    assert fleet.router().ready_count == 2
    assert "replica demo-0: ready after 3.2s" in fleet.lines
    await fleet.tick()
    assert fleet.runtime.start_calls == ["demo-0", "demo-1"], "idempotent"


async def test_a_crashed_replica_restarts_under_its_own_id_after_backoff() -> None:
    fleet = Fleet(demo(1))
    await fleet.tick(2)
    fleet.runtime.crash("demo-0", -9)
    await fleet.tick()
    assert fleet.states() == {"demo-0": "pending"}
    assert "replica demo-0 crashed (exit -9); restarting in 1s (restart 1)" in fleet.lines
    assert fleet.runtime.stop_calls == ["demo-0"], "the dead process is released"
    assert fleet.router().ready_count == 0
    await fleet.tick()
    assert fleet.runtime.start_calls == ["demo-0"], "not before the backoff elapsed"
    fleet.clock.advance(1.0)
    await fleet.tick(2)
    assert fleet.states() == {"demo-0": "ready"}
    assert fleet.controller.replicas_of("demo")[0]["restarts"] == 1


async def test_ids_are_never_reused() -> None:
    fleet = Fleet(demo(2))
    await fleet.tick(2)
    fleet.source.put(demo(1))
    await fleet.tick(2)
    fleet.source.put(demo(2))
    await fleet.tick(2)
    assert [r["id"] for r in fleet.controller.replicas_of("demo") if r["state"] == "ready"] == [
        "demo-0",
        "demo-2",
    ]


async def test_start_errors_are_crashes_and_end_failed_with_the_message() -> None:
    fleet = Fleet(demo(1))
    fleet.runtime.start_errors["demo"] = "no such model: m"
    for _ in range(RECONCILE.max_consecutive_failures):
        await fleet.tick()
        fleet.clock.advance(60)
    assert fleet.states() == {"demo-0": "failed"}
    assert fleet.lines[-1] == "replica demo-0 failed after 3 crashes: no such model: m"
    with pytest.raises(SettleError, match="no such model: m"):
        await fleet.controller.wait_until_settled(timeout_s=1)


async def test_a_failing_source_keeps_the_last_known_deployments() -> None:
    fleet = Fleet(demo(1))
    await fleet.tick(2)

    async def broken() -> list[DeploymentSpec]:
        raise OSError("database is locked")

    fleet.source.list_deployments = broken  # type: ignore[method-assign]
    await fleet.tick(3)
    assert fleet.states() == {"demo-0": "ready"}
    assert sum("database is locked" in line for line in fleet.lines) == 1


async def test_drain_waits_for_the_gateways_in_flight_requests() -> None:
    fleet = Fleet(demo(1))
    await fleet.tick(2)
    router = fleet.router()
    request = RoutingRequest(request_id="r1", model="demo")
    endpoint = router.select(request)
    assert endpoint is not None
    router.begin(endpoint, request)
    fleet.source.put(demo(0))
    await fleet.tick(2)
    assert fleet.states() == {"demo-0": "draining"}
    assert fleet.controller.replicas_of("demo")[0]["in_flight"] == 1
    assert fleet.router().select(request) is None, "a draining replica gets no new request"
    router.end(endpoint, request, ok=True, tokens=10)
    await fleet.tick()
    assert fleet.states() == {"demo-0": "stopped"}
    assert fleet.runtime.running_ids() == []


async def test_taken_out_while_still_preparing_cancels_the_start() -> None:
    fleet = Fleet(demo(1))
    fleet.runtime.start_gate = asyncio.Event()
    await fleet.controller.reconcile_once()
    await asyncio.sleep(0)
    fleet.source.put(demo(0))
    await fleet.tick()
    assert fleet.states() == {"demo-0": "stopped"}
    assert fleet.runtime.running_ids() == []


async def test_rolling_update_publishes_a_new_replica_before_the_old_one_drains() -> None:
    fleet = Fleet(demo(1, model="m1"))
    await fleet.tick(2)
    fleet.source.put(demo(1, model="m2"))
    await fleet.tick()
    assert fleet.states() == {"demo-0": "ready", "demo-1": "starting"}
    await fleet.tick()
    assert fleet.states() == {"demo-0": "draining", "demo-1": "ready"}
    assert fleet.router().ready_count == 1
    await fleet.tick()
    assert fleet.states() == {"demo-0": "stopped", "demo-1": "ready"}


async def test_undeployed_stays_published_for_no_project_until_drained() -> None:
    fleet = Fleet(demo(1), DeploymentSpec(name="other", model="m"))
    await fleet.tick(2)
    router = fleet.router()
    request = RoutingRequest(request_id="r1", model="demo")
    endpoint = router.select(request)
    assert endpoint is not None
    router.begin(endpoint, request)
    fleet.source.remove("demo")
    await fleet.tick()
    assert fleet.directory.models("p1") == ["other"]
    assert fleet.controller.status()[0]["undeployed"] is True
    router.end(endpoint, request, ok=True)
    await fleet.tick()
    assert fleet.directory.models() == ["other"]


async def test_external_endpoints_are_probed_never_started() -> None:
    fleet = Fleet(demo(endpoints=("http://a:1/v1", "http://b:2")))
    fleet.prober.down.add("http://b:2")
    await fleet.tick(2)
    assert fleet.states() == {"demo-0": "ready", "demo-1": "unhealthy"}
    assert fleet.runtime.start_calls == []
    assert [e.url for e in fleet.router()._ready] == ["http://a:1"]
    await fleet.controller.wait_until_settled(timeout_s=1)
    fleet.source.put(demo(endpoints=("http://b:2",)))
    await fleet.tick(2)
    assert fleet.states()["demo-0"] == "ready", "kept while its replacement is down"
    fleet.prober.down.clear()
    await fleet.tick(2)
    assert fleet.states() == {"demo-0": "stopped", "demo-1": "ready"}
    assert fleet.runtime.stop_calls == []


async def test_status_lists_specs_with_their_replicas() -> None:
    fleet = Fleet(demo(1))
    await fleet.tick(2)
    (entry,) = fleet.controller.status()
    assert entry["name"] == "demo"
    assert entry["spec"] == demo(1).to_dict()
    assert entry["revision"] == demo(1).revision()
    assert entry["ready_replicas"] == 1
    replicas = entry["replicas"]
    assert isinstance(replicas, list)
    (replica,) = replicas
    assert replica["state"] == "ready"
    assert replica["pid"] is not None


@pytest.fixture
async def running() -> AsyncIterator[Fleet]:
    fleet = Fleet(demo(2))
    fleet.runtime.healthy_on_start = False
    task = asyncio.create_task(fleet.controller.run())
    yield fleet
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_wait_until_settled_returns_once_the_target_is_ready(running: Fleet) -> None:
    waiter = asyncio.create_task(running.controller.wait_until_settled(timeout_s=5))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    for replica_id in ("demo-0", "demo-1"):
        running.runtime.set_healthy(replica_id)
    await asyncio.wait_for(waiter, 5)
    with pytest.raises(SettleError, match="no deployment named 'nope'"):
        await running.controller.wait_until_settled(["nope"], timeout_s=1)


async def test_wait_until_settled_times_out_saying_what_it_waits_for(running: Fleet) -> None:
    with pytest.raises(TimeoutError, match="demo: 0/2 ready"):
        await running.controller.wait_until_settled(timeout_s=0.1)


async def test_shutdown_drains_then_stops_everything(running: Fleet) -> None:
    await running.controller.reconcile_once()
    await running.controller.wait_for_tasks()
    for replica_id in ("demo-0", "demo-1"):
        running.runtime.set_healthy(replica_id)
    await running.controller.wait_until_settled(timeout_s=5)
    await running.controller.shutdown(grace_s=1.0)
    assert running.runtime.running_ids() == []
    assert set(running.states().values()) == {"stopped"}
    assert running.router().ready_count == 0


async def test_the_http_prober_reads_health_statuses_and_connection_errors() -> None:
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        if request.url.host == "down":
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200 if request.url.host == "up" else 503)

    prober = HttpEndpointProber(transport=httpx.MockTransport(answer))
    assert (await prober.probe("http://up/v1")).healthy
    sick = await prober.probe("http://sick")
    assert (sick.alive, sick.healthy, sick.detail) == (True, False, "health 503")
    down = await prober.probe("http://down")
    assert not down.alive
    assert "ConnectError" in down.detail
    assert seen[0] == "http://up/health"
    await prober.aclose()


async def test_the_context_length_replicas_report_is_published() -> None:
    prober = FakeEndpointProber()
    url = "http://127.0.0.1:9001"
    prober.context_lengths[url] = 32768
    spec = DeploymentSpec(name="ext", model="ext", endpoints=(url,))
    directory = ReplicaDirectory()
    controller = Controller(StaticDeployments([spec]), FakeRuntime(), directory, prober=prober)
    await controller.reconcile_once()
    await controller.reconcile_once()
    router = directory.router("ext")
    assert router is not None
    assert router.max_model_len == 32768
    stated = DeploymentSpec(name="ext", model="ext", endpoints=(url,), max_model_len=4096)
    controller = Controller(StaticDeployments([stated]), FakeRuntime(), directory, prober=prober)
    await controller.reconcile_once()
    await controller.reconcile_once()
    assert directory.router("ext").max_model_len == 4096  # type: ignore[union-attr]


async def test_the_http_prober_reads_the_context_length_from_v1_models() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.host == "vllm":
            return httpx.Response(200, json={"data": [{"id": "m", "max_model_len": 40960}]})
        if request.url.host == "silent":
            return httpx.Response(200, json={"data": [{"id": "m"}]})
        return httpx.Response(200, text="not json")

    prober = HttpEndpointProber(transport=httpx.MockTransport(answer))
    assert await prober.context_length("http://vllm/v1") == 40960
    assert await prober.context_length("http://silent") is None
    assert await prober.context_length("http://broken") is None
    await prober.aclose()
