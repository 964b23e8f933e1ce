"""Names are normalized and unique case-folded; the database is private (issue 7, item 10)."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest

from aiforge.config import Settings
from aiforge.platform.bootstrap import build_platform

INVISIBLE = ["a\x00b", "ad\u200bmin", "\u202eevil", "a\u2066b", "\ufeffx", "a\x1b[31mb"]


@pytest.mark.parametrize("name", INVISIBLE)
async def test_names_with_invisible_characters_are_400s(admin: Any, name: str) -> None:
    http, headers = admin.http, admin.headers()
    project = admin.runtime.default.project_id
    attempts = [
        ("/admin/v1/organizations", {"name": name}, "name"),
        ("/admin/v1/projects", {"name": name, "organization_id": "org_x"}, "name"),
        ("/admin/v1/users", {"email": f"{name}@example.com"}, "email"),
        ("/admin/v1/users", {"email": "ok@example.com", "name": name}, "name"),
        (f"/admin/v1/projects/{project}/keys", {"name": name}, "name"),
    ]
    for path, body, param in attempts:
        response = await http.post(path, json=body, headers=headers)
        assert response.status_code == 400, (path, response.text)
        error = response.json()["error"]
        assert error["param"] == param, error
        assert "invisible" in error["message"]


async def test_names_differing_only_by_case_or_width_clash(admin: Any) -> None:
    http, headers = admin.http, admin.headers()
    response = await http.post("/admin/v1/organizations", json={"name": "Acme"}, headers=headers)
    assert response.status_code == 201, response.text
    organization = response.json()["id"]
    for clash in ("ACME", "ａｃｍｅ", " acme "):
        response = await http.post("/admin/v1/organizations", json={"name": clash}, headers=headers)
        assert response.status_code == 409, (clash, response.text)
    wide = {"name": "Ｂｅｔａ"}
    response = await http.post("/admin/v1/organizations", json=wide, headers=headers)
    assert response.status_code == 201, response.text
    assert response.json()["name"] == "Beta"
    other = response.json()["id"]

    project = {"name": "Web", "organization_id": organization}
    assert (await http.post("/admin/v1/projects", json=project, headers=headers)).status_code == 201
    project["name"] = "WEB"
    assert (await http.post("/admin/v1/projects", json=project, headers=headers)).status_code == 409
    project["organization_id"] = other  # unique per organization only
    assert (await http.post("/admin/v1/projects", json=project, headers=headers)).status_code == 201


async def test_emails_are_one_user_whatever_their_case(admin: Any) -> None:
    http, headers = admin.http, admin.headers()
    response = await http.post(
        "/admin/v1/users", json={"email": "Ann@Example.com"}, headers=headers
    )
    assert response.status_code == 201, response.text
    user_id = response.json()["id"]
    response = await http.post(
        "/admin/v1/users", json={"email": "ann@example.com"}, headers=headers
    )
    assert response.status_code == 409, response.text
    project = admin.runtime.default.project_id
    response = await http.put(
        f"/admin/v1/projects/{project}/members",
        json={"email": "ANN@EXAMPLE.COM", "role": "viewer"},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    assert response.json()["user_id"] == user_id


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_the_sqlite_database_is_created_owner_only(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    runtime = build_platform(Settings(data_dir=data_dir))
    await runtime.start()
    try:
        assert _mode(data_dir) == 0o700
        database = data_dir / "aiforge.db"
        for path in (database, database.with_name("aiforge.db-wal"), data_dir / "admin-key"):
            assert _mode(path) == 0o600, path
    finally:
        await runtime.stop()


async def test_an_existing_open_data_dir_and_database_are_narrowed(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)
    database = data_dir / "aiforge.db"
    database.touch()
    database.chmod(0o644)
    runtime = build_platform(Settings(data_dir=data_dir))
    await runtime.start()
    try:
        assert _mode(data_dir) == 0o700
        assert _mode(database) == 0o600
    finally:
        await runtime.stop()
