"""``/admin/v1/deployments`` over HTTP on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from deployments_support import ServedPlatform

from aiforge.platform.deployments import spec_from_mapping

QWEN = "Qwen/Qwen3-0.6B"
BODY: dict[str, Any] = {
    "name": QWEN,
    "model": QWEN,
    "replicas": 2,
    "policy": "prefix_affinity",
    "engine_args": ["--enable-prefix-caching"],
    "placement": {"regions": ["eu-west"], "node_labels": {"gpu": "h100"}},
}
PATH = f"/admin/v1/deployments/{QWEN}"


def assert_error(response: Any, status: int, param: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["message"]
    if param is not None:
        assert error["param"] == param, error
    return error


async def test_create_get_list_and_names_with_a_slash(served: ServedPlatform) -> None:
    http, headers = served.http, served.headers()
    created = await http.post("/admin/v1/deployments", json=BODY, headers=headers)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["name"] == QWEN
    assert body["generation"] == 1
    assert body["spec"]["replicas"] == 2
    assert body["spec"]["placement"] == BODY["placement"]
    assert body["spec"]["projects"] is None
    assert body["replicas"] == []
    assert body["ready_replicas"] == 0
    assert len(body["revision"]) == 12

    fetched = await http.get(PATH, headers=headers)
    assert fetched.json() == body
    listed = await http.get("/admin/v1/deployments", headers=headers)
    assert [row["name"] for row in listed.json()] == [QWEN]
    stored = await served.runtime.deployments.list_deployments()
    assert [spec.to_dict() for spec in stored] == [body["spec"]]

    again = await http.post("/admin/v1/deployments", json=BODY, headers=headers)
    assert_error(again, 409, "name")
    assert served.control_plane.wakes == 1


async def test_put_applies_idempotently_and_says_what_it_did(served: ServedPlatform) -> None:
    http, headers = served.http, served.headers()
    spec = {key: value for key, value in BODY.items() if key != "name"}
    first = await http.put(PATH, json=spec, headers=headers)
    assert first.status_code == 201, first.text
    assert (first.json()["result"], first.json()["generation"]) == ("created", 1)
    second = await http.put(PATH, json=spec, headers=headers)
    assert second.status_code == 200
    assert (second.json()["result"], second.json()["generation"]) == ("unchanged", 1)
    third = await http.put(PATH, json={**spec, "replicas": 3}, headers=headers)
    assert (third.json()["result"], third.json()["generation"]) == ("updated", 2)
    # PUT replaces: what is left out returns to its default.
    assert third.json()["spec"]["engine_args"] == ["--enable-prefix-caching"]
    bare = await http.put(PATH, json={"model": QWEN}, headers=headers)
    assert bare.json()["spec"]["policy"] == "least_outstanding"
    assert bare.json()["spec"]["placement"] == {"regions": [], "node_labels": {}}
    assert served.control_plane.wakes == 3

    mismatch = await http.put(PATH, json={**spec, "name": "other"}, headers=headers)
    assert_error(mismatch, 400, "name")


async def test_patch_scale_and_delete(served: ServedPlatform) -> None:
    http, headers = served.http, served.headers()
    await http.post("/admin/v1/deployments", json=BODY, headers=headers)
    project_id, _ = await served.project_key("web")

    patched = await http.patch(
        PATH, json={"policy": "round_robin", "projects": [project_id]}, headers=headers
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["spec"]["policy"] == "round_robin"
    assert patched.json()["spec"]["projects"] == [project_id]
    assert patched.json()["spec"]["replicas"] == 2
    assert patched.json()["generation"] == 2

    scaled = await http.post(f"{PATH}/scale", json={"replicas": 4}, headers=headers)
    assert scaled.status_code == 200, scaled.text
    assert (scaled.json()["spec"]["replicas"], scaled.json()["generation"]) == (4, 3)
    spec = served.runtime.deployments.get(QWEN).spec
    assert spec.replicas == 4
    assert spec.projects == frozenset({project_id})

    deleted = await http.delete(PATH, headers=headers)
    assert deleted.status_code == 204
    assert_error(await http.get(PATH, headers=headers), 404, "name")
    assert_error(await http.delete(PATH, headers=headers), 404, "name")
    assert_error(
        await http.post(f"{PATH}/scale", json={"replicas": 1}, headers=headers), 404, "name"
    )
    assert served.control_plane.wakes == 4


async def test_a_deployment_named_like_a_sub_path_still_works(served: ServedPlatform) -> None:
    http, headers = served.http, served.headers()
    odd = {"name": "team/scale", "model": "demo"}
    assert (await http.post("/admin/v1/deployments", json=odd, headers=headers)).status_code == 201
    assert (await http.get("/admin/v1/deployments/team/scale", headers=headers)).json()[
        "name"
    ] == "team/scale"
    scaled = await http.post(
        "/admin/v1/deployments/team/scale/scale", json={"replicas": 3}, headers=headers
    )
    assert scaled.json()["spec"]["replicas"] == 3
    encoded = await http.get("/admin/v1/deployments/team%2Fscale", headers=headers)
    assert encoded.json()["name"] == "team/scale"


async def test_replicas_come_from_the_control_plane(served: ServedPlatform) -> None:
    http, headers = served.http, served.headers()
    await http.post("/admin/v1/deployments", json=BODY, headers=headers)
    served.control_plane.replicas[QWEN] = [
        {"id": "r1", "state": "ready", "in_flight": 3, "pid": 101},
        {"id": "r2", "state": "starting", "in_flight": 0, "pid": 102},
    ]
    body = (await http.get(PATH, headers=headers)).json()
    assert [replica["id"] for replica in body["replicas"]] == ["r1", "r2"]
    assert body["ready_replicas"] == 1
    listed = (await http.get("/admin/v1/deployments", headers=headers)).json()
    assert listed[0]["replicas"][0]["in_flight"] == 3


@pytest.mark.parametrize(
    ("changes", "param"),
    [
        ({"replicas": -1}, "replicas"),
        ({"replicas": "two"}, "replicas"),
        ({"policy": "fastest"}, "policy"),
        ({"engine": "tensorrt"}, "engine"),
        ({"name": "has space"}, "name"),
        ({"projects": ["proj_missing"]}, "projects"),
        ({"replica": 2}, "replica"),
        ({"max_replicas": 1}, "replicas"),
        ({"model": ""}, "model"),
    ],
)
async def test_bad_specs_are_400_naming_the_field_and_change_nothing(
    served: ServedPlatform, changes: dict[str, Any], param: str
) -> None:
    http, headers = served.http, served.headers()
    body = {**BODY, **changes}
    assert_error(await http.post("/admin/v1/deployments", json=body, headers=headers), 400, param)
    if "name" not in changes:
        assert_error(await http.put(PATH, json=body, headers=headers), 400, param)
    assert (await http.get("/admin/v1/deployments", headers=headers)).json() == []
    assert served.control_plane.wakes == 0


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"replicas": None}, "replicas"),
        ({"policy": "fastest"}, "policy"),
        ({"name": "renamed"}, "name"),
        ({"projects": ["proj_missing"]}, "projects"),
    ],
)
async def test_bad_patches_are_400_and_change_nothing(
    served: ServedPlatform, change: dict[str, Any], param: str
) -> None:
    http, headers = served.http, served.headers()
    await http.post("/admin/v1/deployments", json=BODY, headers=headers)
    assert_error(await http.patch(PATH, json=change, headers=headers), 400, param)
    assert (await http.get(PATH, headers=headers)).json()["generation"] == 1
    negative = await http.post(f"{PATH}/scale", json={"replicas": -1}, headers=headers)
    assert_error(negative, 400, "replicas")


async def test_only_platform_admins_manage_deployments(served: ServedPlatform) -> None:
    http = served.http
    await http.post("/admin/v1/deployments", json=BODY, headers=served.headers())
    _, project_key = await served.project_key("web")
    headers = served.headers(project_key)
    attempts = [
        http.get("/admin/v1/deployments", headers=headers),
        http.get(PATH, headers=headers),
        http.post("/admin/v1/deployments", json={**BODY, "name": "x"}, headers=headers),
        http.put(PATH, json={"model": "demo"}, headers=headers),
        http.patch(PATH, json={"replicas": 1}, headers=headers),
        http.post(f"{PATH}/scale", json={"replicas": 1}, headers=headers),
        http.delete(PATH, headers=headers),
    ]
    for attempt in attempts:
        error = assert_error(await attempt, 403)
        assert error["type"] == "permission_error"
        assert "platform admin" in error["message"]
    assert_error(await http.get("/admin/v1/deployments"), 401)
    assert served.runtime.deployments.get(QWEN).spec == spec_from_mapping(BODY)
    assert served.control_plane.wakes == 1
