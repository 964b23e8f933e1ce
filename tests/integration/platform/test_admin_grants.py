"""No key widens its own rights or grants more than it holds (issue 7, item 9).

The audit's case: an ``admin`` key with an expiry and limits cleared its own expiry and
limits and minted admin keys that never expire. Each widening is refused with 403
``exceeds_own_rights``; narrowing is allowed; platform admin keys are not bounded.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

LIMITS = {"requests_per_minute": 10, "tokens_per_day": 1000}


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _refused(response: httpx.Response, param: str) -> None:
    assert response.status_code == 403, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("exceeds_own_rights", param)


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


async def _bounded_admin_key(admin: Any, project_id: str, expires: datetime) -> dict[str, Any]:
    """An ``admin`` key with an expiry and limits, made by the platform admin."""
    http, headers = admin.http, admin.headers()
    response = await http.post(
        f"/admin/v1/projects/{project_id}/keys",
        json={"name": "bounded", "role": "admin", "expires_at": _iso(expires)},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    key: dict[str, Any] = response.json()
    response = await http.put(f"/admin/v1/keys/{key['id']}/limits", json=LIMITS, headers=headers)
    assert response.status_code == 200, response.text
    return key


async def test_a_key_cannot_clear_or_extend_its_own_expiry_or_limits(
    admin: Any, tenant_factory: Any
) -> None:
    tenant = await tenant_factory("bounded")
    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    key = await _bounded_admin_key(admin, tenant.project_id, expires)
    http, own = admin.http, _bearer(key["key"])
    me = f"/admin/v1/keys/{key['id']}"

    _refused(await http.patch(me, json={"expires_at": None}, headers=own), "expires_at")
    later = _iso(expires + timedelta(days=365))
    _refused(await http.patch(me, json={"expires_at": later}, headers=own), "expires_at")
    _refused(await http.put(f"{me}/limits", json={}, headers=own), "requests_per_minute")
    raised = {**LIMITS, "tokens_per_day": 1001}
    _refused(await http.put(f"{me}/limits", json=raised, headers=own), "tokens_per_day")

    shown = (await http.get(me, headers=admin.headers())).json()
    assert datetime.fromisoformat(shown["expires_at"]) == expires
    limits = (await http.get(f"{me}/limits", headers=admin.headers())).json()
    assert {name: limits[name] for name in LIMITS} == LIMITS

    sooner = expires - timedelta(hours=1)
    response = await http.patch(me, json={"expires_at": _iso(sooner)}, headers=own)
    assert response.status_code == 200, response.text
    narrower = {"requests_per_minute": 5, "tokens_per_day": 1000, "max_concurrent": 2}
    response = await http.put(f"{me}/limits", json=narrower, headers=own)
    assert response.status_code == 200, response.text


async def test_keys_a_key_creates_cannot_outlive_it_or_have_looser_limits(
    admin: Any, tenant_factory: Any
) -> None:
    tenant = await tenant_factory("minter")
    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    key = await _bounded_admin_key(admin, tenant.project_id, expires)
    http, own = admin.http, _bearer(key["key"])
    keys = f"/admin/v1/projects/{tenant.project_id}/keys"

    later = _iso(expires + timedelta(seconds=1))
    _refused(
        await http.post(keys, json={"role": "admin", "expires_at": later}, headers=own),
        "expires_at",
    )
    response = await http.post(keys, json={"role": "owner"}, headers=own)
    assert response.status_code == 403, response.text

    response = await http.post(keys, json={"name": "child", "role": "admin"}, headers=own)
    assert response.status_code == 201, response.text
    child = response.json()
    assert datetime.fromisoformat(child["expires_at"]) == expires  # not "never"
    child_path = f"/admin/v1/keys/{child['id']}"
    limits = (await http.get(f"{child_path}/limits", headers=own)).json()
    assert {name: limits[name] for name in LIMITS} == LIMITS

    _refused(await http.patch(child_path, json={"expires_at": None}, headers=own), "expires_at")
    _refused(await http.put(f"{child_path}/limits", json={}, headers=own), "requests_per_minute")
    # The child is bounded the same way, so it cannot launder its parent's bounds either.
    grandchild = await http.post(keys, json={"role": "member"}, headers=_bearer(child["key"]))
    assert grandchild.status_code == 201, grandchild.text
    assert datetime.fromisoformat(grandchild.json()["expires_at"]) == expires


async def test_platform_admin_keys_grant_any_lifetime_and_limits(
    admin: Any, tenant_factory: Any
) -> None:
    tenant = await tenant_factory("root")
    expires = datetime.now(UTC) + timedelta(days=1)
    key = await _bounded_admin_key(admin, tenant.project_id, expires)
    path = f"/admin/v1/keys/{key['id']}"
    response = await admin.http.patch(path, json={"expires_at": None}, headers=admin.headers())
    assert response.status_code == 200, response.text
    assert response.json()["expires_at"] is None
    response = await admin.http.put(f"{path}/limits", json={}, headers=admin.headers())
    assert response.status_code == 200, response.text
    # An unbounded project key still manages its project's keys freely.
    response = await admin.http.put(
        f"{path}/limits", json={"tokens_per_month": 2**40}, headers=_bearer(tenant.token("owner"))
    )
    assert response.status_code == 200, response.text
    assert response.json()["tokens_per_month"] == 2**40
