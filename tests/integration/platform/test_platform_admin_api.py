"""The admin API end to end on SQLite and PostgreSQL: keys, roles, limits, errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from aiforge.platform.limits.policy import LimitPolicy
from aiforge.types import AuthError


def bearer(token: str) -> str:
    return f"Bearer {token}"


async def test_a_key_is_shown_once_works_at_once_and_is_stored_hashed(
    admin: Any, tenant_factory: Any
) -> None:
    tenant = await tenant_factory("acme")
    created = tenant.keys["member"]
    token = created["key"]

    principal = admin.runtime.authenticator.authenticate(bearer(token))
    assert principal.key_id == created["id"]
    assert principal.project_id == tenant.project_id
    assert principal.organization_id == tenant.organization_id
    assert principal.role == "member"
    assert created["status"] == "active"
    assert created["display"].startswith("sk-af-")
    assert token.split("_", 1)[1] not in created["display"]

    listed = await admin.http.get(
        f"/admin/v1/projects/{tenant.project_id}/keys", headers=admin.headers()
    )
    fetched = await admin.http.get(f"/admin/v1/keys/{created['id']}", headers=admin.headers())
    assert token not in listed.text
    assert token not in fetched.text
    assert "key" not in fetched.json()
    with admin.runtime.sessions() as session:
        from aiforge.platform.db.tenancy import ApiKeyRow

        row = session.get(ApiKeyRow, created["id"])
        assert row is not None
        assert token not in row.secret_hash
        assert token.split("_", 1)[1] not in row.secret_hash


async def test_update_allowlist_region_expiry_and_revoke_take_effect_at_once(
    admin: Any, tenant_factory: Any
) -> None:
    tenant = await tenant_factory("acme")
    key_id, token = tenant.key_id("member"), tenant.token("member")
    auth = admin.runtime.authenticator

    response = await admin.http.patch(
        f"/admin/v1/keys/{key_id}",
        json={"allowed_models": ["qwen3-0.6b"], "region": "eu-west"},
        headers=admin.headers(tenant.token("admin")),
    )
    assert response.status_code == 200, response.text
    principal = auth.authenticate(bearer(token))
    assert principal.allowed_models == frozenset({"qwen3-0.6b"})
    assert principal.region == "eu-west"

    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    response = await admin.http.patch(
        f"/admin/v1/keys/{key_id}", json={"expires_at": past}, headers=admin.headers()
    )
    assert response.json()["status"] == "expired"
    with pytest.raises(AuthError) as refused:
        auth.authenticate(bearer(token))
    assert refused.value.code == "expired_api_key"

    response = await admin.http.patch(
        f"/admin/v1/keys/{key_id}", json={"expires_at": None}, headers=admin.headers()
    )
    assert response.json()["status"] == "active"
    auth.authenticate(bearer(token))

    response = await admin.http.post(
        f"/admin/v1/keys/{key_id}/revoke", headers=admin.headers(tenant.token("owner"))
    )
    assert response.json()["status"] == "revoked"
    with pytest.raises(AuthError):
        auth.authenticate(bearer(token))
    response = await admin.http.get("/admin/v1/projects", headers=admin.headers(token))
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


async def test_roles_limit_what_a_projects_own_keys_may_do(admin: Any, tenant_factory: Any) -> None:
    tenant = await tenant_factory("acme")
    http, project = admin.http, tenant.project_id

    async def status(method: str, path: str, role: str, body: Any = None) -> int:
        response = await http.request(
            method, path, json=body, headers=admin.headers(tenant.token(role))
        )
        if response.status_code >= 400:
            assert set(response.json()["error"]) == {"message", "type", "param", "code"}
        return int(response.status_code)

    keys_path = f"/admin/v1/projects/{project}/keys"
    assert await status("GET", keys_path, "viewer") == 200
    assert await status("POST", keys_path, "viewer", {"role": "viewer"}) == 403
    assert await status("POST", keys_path, "member", {"role": "viewer"}) == 403
    assert await status("POST", keys_path, "admin", {"role": "owner"}) == 403
    assert await status("POST", keys_path, "admin", {"role": "admin"}) == 201
    owner_key = tenant.key_id("owner")
    assert await status("POST", f"/admin/v1/keys/{owner_key}/revoke", "admin") == 403
    limits = {"requests_per_minute": 10}
    assert await status("PUT", f"/admin/v1/keys/{owner_key}/limits", "member", limits) == 403
    assert await status("PUT", f"/admin/v1/keys/{owner_key}/limits", "owner", limits) == 200
    # A project cannot raise its own allowance.
    assert await status("PUT", f"/admin/v1/projects/{project}/limits", "owner", limits) == 403
    assert await status("GET", f"/admin/v1/projects/{project}/limits", "viewer") == 200
    assert (
        await status(
            "POST",
            "/admin/v1/projects",
            "owner",
            {"name": "x", "organization_id": tenant.organization_id},
        )
        == 403
    )


async def test_the_platform_admin_key_cannot_be_touched_by_the_default_projects_keys(
    admin: Any,
) -> None:
    default_project = admin.runtime.default.project_id
    response = await admin.http.post(
        f"/admin/v1/projects/{default_project}/keys",
        json={"role": "owner"},
        headers=admin.headers(),
    )
    owner_token = response.json()["key"]
    keys = await admin.http.get(
        f"/admin/v1/projects/{default_project}/keys", headers=admin.headers(owner_token)
    )
    admin_key = next(key for key in keys.json() if key["is_platform_admin"])

    response = await admin.http.post(
        f"/admin/v1/keys/{admin_key['id']}/revoke", headers=admin.headers(owner_token)
    )
    assert response.status_code == 403
    admin.runtime.authenticator.authenticate(bearer(admin.admin_key))


async def test_limits_reach_the_authenticator(admin: Any, tenant_factory: Any) -> None:
    tenant = await tenant_factory("acme")
    auth = admin.runtime.authenticator
    principal = auth.authenticate(bearer(tenant.token("member")))
    assert auth.limits_for(principal) == (LimitPolicy(), LimitPolicy())

    key_limits = {"requests_per_minute": 600, "max_concurrent": 4}
    project_limits = {"tokens_per_day": 100_000, "tokens_per_month": 2_000_000}
    response = await admin.http.put(
        f"/admin/v1/keys/{principal.key_id}/limits", json=key_limits, headers=admin.headers()
    )
    assert response.json() == {
        "scope": "key",
        "subject_id": principal.key_id,
        "requests_per_minute": 600,
        "tokens_per_minute": None,
        "max_concurrent": 4,
        "tokens_per_day": None,
        "tokens_per_month": None,
    }
    await admin.http.put(
        f"/admin/v1/projects/{tenant.project_id}/limits",
        json=project_limits,
        headers=admin.headers(),
    )

    assert auth.limits_for(principal) == (
        LimitPolicy(requests_per_minute=600, max_concurrent=4),
        LimitPolicy(tokens_per_day=100_000, tokens_per_month=2_000_000),
    )
    response = await admin.http.get(
        f"/admin/v1/keys/{principal.key_id}/limits", headers=admin.headers(tenant.token("viewer"))
    )
    assert response.json()["requests_per_minute"] == 600


async def test_bad_input_gets_openai_errors(admin: Any, tenant_factory: Any) -> None:
    http, headers = admin.http, admin.headers()
    await tenant_factory("acme")

    missing = await http.post("/admin/v1/organizations", json={}, headers=headers)
    assert missing.status_code == 400
    assert missing.json()["error"]["param"] == "name"
    assert missing.json()["error"]["type"] == "invalid_request_error"

    duplicate = await http.post("/admin/v1/organizations", json={"name": "acme"}, headers=headers)
    assert duplicate.status_code == 409
    assert "acme" in duplicate.json()["error"]["message"]

    negative = await http.put(
        f"/admin/v1/projects/{admin.runtime.default.project_id}/limits",
        json={"requests_per_minute": -1},
        headers=headers,
    )
    assert negative.status_code == 400
    assert negative.json()["error"]["param"] == "requests_per_minute"

    naive = await http.post(
        f"/admin/v1/projects/{admin.runtime.default.project_id}/keys",
        json={"expires_at": "2030-01-01T00:00:00"},
        headers=headers,
    )
    assert naive.status_code == 400
    assert naive.json()["error"]["param"] == "expires_at"

    unknown = await http.get("/admin/v1/keys/key_doesnotexist", headers=headers)
    assert unknown.status_code == 404

    no_key = await http.get("/admin/v1/organizations")
    assert no_key.status_code == 401
    assert no_key.headers["www-authenticate"] == "Bearer"
    wrong = await http.get("/admin/v1/organizations", headers={"Authorization": "Bearer sk-af-x"})
    assert wrong.status_code == 401


async def test_members_by_email_and_removal(admin: Any, tenant_factory: Any) -> None:
    tenant = await tenant_factory("acme")
    http, path = admin.http, f"/admin/v1/projects/{tenant.project_id}/members"
    owner = admin.headers(tenant.token("owner"))

    added = await http.put(path, json={"email": "dev@acme.io", "role": "member"}, headers=owner)
    assert added.status_code == 200, added.text
    user_id = added.json()["user_id"]
    users = await http.get("/admin/v1/users", headers=admin.headers(tenant.token("viewer")))
    assert {user["email"] for user in users.json()} == {"acme@example.com", "dev@acme.io"}

    promoted = await http.put(path, json={"user_id": user_id, "role": "admin"}, headers=owner)
    assert promoted.json()["role"] == "admin"
    members = await http.get(path, headers=owner)
    assert sorted(m["role"] for m in members.json()) == ["admin", "admin"]

    removed = await http.delete(f"{path}/{user_id}", headers=owner)
    assert removed.status_code == 204
    again = await http.delete(f"{path}/{user_id}", headers=owner)
    assert again.status_code == 404
    hidden = await http.get(f"/admin/v1/users/{user_id}", headers=owner)
    assert hidden.status_code == 404


async def test_every_admin_operation_is_documented(admin: Any) -> None:
    schema = admin.app.openapi()
    operations = [
        (path, method, spec)
        for path, item in schema["paths"].items()
        if path.startswith("/admin/v1")
        for method, spec in item.items()
    ]
    assert len(operations) >= 20
    for path, method, spec in operations:
        assert spec.get("summary"), (method, path)
        success = next(code for code in spec["responses"] if code.startswith("2"))
        if success != "204":
            assert "content" in spec["responses"][success], (method, path)
