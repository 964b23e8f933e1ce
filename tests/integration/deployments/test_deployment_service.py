"""DeploymentService on migrated SQLite and PostgreSQL: the store and the controller's source."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from deployments_support import FakeControlPlane
from sqlalchemy import update

from aiforge.cluster.deployments import DeploymentSpec, Placement
from aiforge.config import Settings
from aiforge.platform.bootstrap import PlatformRuntime, build_platform
from aiforge.platform.deployments import ApplyResult, DeploymentService
from aiforge.platform.deployments.table import DeploymentRow
from aiforge.platform.domain.errors import Conflict, InvalidRequest, NotFound

CHAT = DeploymentSpec(
    name="Qwen/Qwen3-0.6B",
    model="Qwen/Qwen3-0.6B",
    engine="transformers",
    engine_args=("--foo", "1"),
    replicas=2,
    max_replicas=4,
    policy="round_robin",
    max_model_len=4096,
    threads=2,
    placement=Placement(regions=("eu-west",), node_labels={"zone": "a"}),
)


@pytest.fixture
async def runtime(database_url: str, tmp_path: Path) -> AsyncIterator[PlatformRuntime]:
    started = build_platform(Settings(data_dir=tmp_path / "data", database_url=database_url))
    await started.start()
    try:
        yield started
    finally:
        await started.stop()


@pytest.fixture
def control(runtime: PlatformRuntime) -> FakeControlPlane:
    plane = FakeControlPlane()
    runtime.attach_control_plane(plane)
    return plane


async def test_list_deployments_returns_the_specs_as_stored(
    runtime: PlatformRuntime, control: FakeControlPlane
) -> None:
    service = runtime.deployments
    assert await service.list_deployments() == []
    demo = DeploymentSpec(name="demo", model="demo")
    service.create(CHAT)
    service.create(demo)

    assert await service.list_deployments() == [CHAT, demo]
    stored = service.get(CHAT.name)
    assert stored.spec == CHAT
    assert stored.generation == 1
    assert stored.created_at == stored.updated_at
    assert control.wakes == 2


async def test_apply_is_idempotent_and_bumps_the_generation_only_on_change(
    runtime: PlatformRuntime, control: FakeControlPlane
) -> None:
    service = runtime.deployments
    result, stored = service.apply(CHAT)
    assert (result, stored.generation) == (ApplyResult.CREATED, 1)
    result, stored = service.apply(CHAT)
    assert (result, stored.generation) == (ApplyResult.UNCHANGED, 1)
    assert control.wakes == 1

    result, stored = service.apply(replace(CHAT, policy="least_outstanding"))
    assert (result, stored.generation) == (ApplyResult.UPDATED, 2)
    assert stored.spec.policy == "least_outstanding"
    assert stored.updated_at > stored.created_at
    assert control.wakes == 2


async def test_update_changes_only_the_fields_sent(
    runtime: PlatformRuntime, control: FakeControlPlane
) -> None:
    service = runtime.deployments
    service.create(CHAT)
    stored = service.update(CHAT.name, {"replicas": 3, "policy": "prefix_affinity"})
    assert stored.spec == replace(CHAT, replicas=3, policy="prefix_affinity")
    assert stored.generation == 2

    same = service.update(CHAT.name, {"replicas": 3})
    assert same.generation == 2
    assert control.wakes == 2

    project = runtime.default
    assert project is not None
    opened = service.update(CHAT.name, {"projects": [project.project_id]})
    assert opened.spec.projects == frozenset({project.project_id})
    everyone = service.update(CHAT.name, {"projects": None})
    assert everyone.spec.projects is None
    assert everyone.generation == 4


async def test_scale_and_delete(runtime: PlatformRuntime, control: FakeControlPlane) -> None:
    service = runtime.deployments
    service.create(CHAT)
    assert service.scale(CHAT.name, 4).spec.replicas == 4
    assert service.scale(CHAT.name, 4).generation == 2
    service.delete(CHAT.name)
    assert await service.list_deployments() == []
    assert control.wakes == 3
    with pytest.raises(NotFound):
        service.get(CHAT.name)
    with pytest.raises(NotFound):
        service.delete(CHAT.name)
    with pytest.raises(NotFound):
        service.scale(CHAT.name, 1)


@pytest.mark.parametrize(
    ("spec", "param"),
    [
        (replace(CHAT, replicas=-1), "replicas"),
        (replace(CHAT, replicas=5), "replicas"),
        (replace(CHAT, policy="fastest"), "policy"),
        (replace(CHAT, engine="tensorrt"), "engine"),
        (replace(CHAT, name="no spaces"), "name"),
        (replace(CHAT, projects=frozenset({"proj_missing"})), "projects"),
        (replace(CHAT, endpoints=("ftp://x",)), "endpoints"),
    ],
)
async def test_specs_that_cannot_be_served_are_refused_and_change_nothing(
    runtime: PlatformRuntime, control: FakeControlPlane, spec: DeploymentSpec, param: str
) -> None:
    service = runtime.deployments
    for attempt in (service.create, service.apply):
        with pytest.raises(InvalidRequest) as refused:
            attempt(spec)
        assert refused.value.param == param
    assert await service.list_deployments() == []
    assert control.wakes == 0


async def test_bad_changes_to_an_existing_deployment_are_refused(
    runtime: PlatformRuntime, control: FakeControlPlane
) -> None:
    service = runtime.deployments
    service.create(CHAT)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"replicas": None}, "replicas"),
        ({"replicas": 9}, "replicas"),
        ({"policy": "nope"}, "policy"),
        ({"name": "other"}, "name"),
        ({"projects": ["proj_missing"]}, "projects"),
    ]
    for changes, param in cases:
        with pytest.raises(InvalidRequest) as refused:
            service.update(CHAT.name, changes)
        assert refused.value.param == param, changes
    with pytest.raises(InvalidRequest):
        service.scale(CHAT.name, -1)
    assert service.get(CHAT.name).generation == 1
    assert control.wakes == 1


async def test_create_refuses_a_taken_name(runtime: PlatformRuntime) -> None:
    runtime.deployments.create(CHAT)
    with pytest.raises(Conflict) as refused:
        runtime.deployments.create(replace(CHAT, replicas=1))
    assert refused.value.param == "name"
    assert runtime.deployments.get(CHAT.name).spec == CHAT


async def test_a_row_this_version_cannot_read_is_skipped_not_fatal(
    runtime: PlatformRuntime,
) -> None:
    runtime.deployments.create(CHAT)
    runtime.deployments.create(DeploymentSpec(name="demo", model="demo"))
    with runtime.sessions.begin() as session:
        session.execute(
            update(DeploymentRow)
            .where(DeploymentRow.name == "demo")
            .values(engine_args={"not": "a list"})
        )
    assert await runtime.deployments.list_deployments() == [CHAT]
    demo = DeploymentSpec(name="demo", model="demo")
    assert runtime.deployments.apply(demo)[0] is ApplyResult.UPDATED  # applying repairs it
    assert await runtime.deployments.list_deployments() == [CHAT, demo]


async def test_without_a_control_plane_changes_are_stored_all_the_same(
    runtime: PlatformRuntime,
) -> None:
    assert isinstance(runtime.deployments, DeploymentService)
    runtime.deployments.create(CHAT)  # on_change defaults to doing nothing
    assert runtime.deployments.get(CHAT.name).generation == 1


async def test_a_change_made_in_a_worker_thread_wakes_the_controller_on_its_loop(
    runtime: PlatformRuntime,
) -> None:
    woken_on: list[int] = []

    class LoopBoundPlane(FakeControlPlane):
        def wake(self) -> None:
            woken_on.append(threading.get_ident())

    runtime.attach_control_plane(LoopBoundPlane())  # attached on the loop, like the controller
    await asyncio.to_thread(runtime.deployments.create, CHAT)  # as an admin route does
    await asyncio.sleep(0)
    runtime.deployments.scale(CHAT.name, 3)  # on the loop itself: called directly
    assert woken_on == [threading.get_ident()] * 2
