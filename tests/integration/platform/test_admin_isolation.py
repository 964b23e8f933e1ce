"""Every admin route refuses another project's key (issue 3's done-when).

The routes are enumerated from the app, so a route added later whose parameters this test
cannot fill makes it fail instead of going untested. Each route is called with the
attacker's *owner* key against the victim's resources: routes naming a resource answer
404 (its existence is not revealed); others answer 403 or list nothing of the victim's.
Afterwards the victim's state is exactly what it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ADMIN_PREFIX = "/admin/v1"


@dataclass(frozen=True)
class Operation:
    """One admin route and method, as the app's OpenAPI schema documents it."""

    method: str
    path: str
    path_params: tuple[str, ...]
    query_params: tuple[str, ...]
    body_schema: str | None


def admin_operations(app: Any) -> list[Operation]:
    """Every ``/admin/v1`` operation, from the schema (which also proves it is documented)."""
    operations = []
    for path, item in app.openapi()["paths"].items():
        if not path.startswith(ADMIN_PREFIX):
            continue
        for method, spec in item.items():
            params = spec.get("parameters", [])
            body = spec.get("requestBody", {}).get("content", {}).get("application/json", {})
            ref = body.get("schema", {}).get("$ref")
            operations.append(
                Operation(
                    method=method.upper(),
                    path=path,
                    path_params=tuple(p["name"] for p in params if p["in"] == "path"),
                    query_params=tuple(p["name"] for p in params if p["in"] == "query"),
                    body_schema=None if ref is None else ref.rsplit("/", 1)[-1],
                )
            )
    return operations


def victim_ids(victim: Any) -> dict[str, str]:
    return {
        "organization_id": victim.organization_id,
        "project_id": victim.project_id,
        "key_id": victim.key_id("member"),
        "user_id": victim.user_id,
        "name": VICTIM_DEPLOYMENT,
    }


def sample_body(operation: Operation, ids: dict[str, str]) -> dict[str, Any] | None:
    if operation.body_schema is None:
        return None
    samples: dict[str, dict[str, Any]] = {
        "OrganizationCreate": {"name": "stolen"},
        "ProjectCreate": {"name": "stolen", "organization_id": ids["organization_id"]},
        "UserCreate": {"email": "thief@example.com"},
        "MembershipCreate": {"user_id": ids["user_id"], "role": "viewer"},
        "ApiKeyCreate": {"name": "stolen", "role": "viewer"},
        "ApiKeyUpdate": {"name": "stolen", "allowed_models": ["x"]},
        "LimitsUpdate": {"requests_per_minute": 1},
        "DeploymentCreate": {"name": "stolen", "model": "demo"},
        "DeploymentApply": {"model": "demo", "projects": [ids["project_id"]]},
        "DeploymentUpdate": {"replicas": 3, "projects": [ids["project_id"]]},
        "DeploymentScale": {"replicas": 3},
    }
    name = operation.body_schema
    assert name in samples, f"{operation.path}: add a sample body for {name}"
    return samples[name]


VICTIM_DEPLOYMENT = "victim/model"
"""A deployment every project uses: only platform admins may read or change deployments."""


async def victim_state(admin: Any, victim: Any) -> dict[str, Any]:
    """Everything about the victim an attacker could have changed (read as platform admin)."""
    http, headers = admin.http, admin.headers()
    deployment = {"model": "demo", "replicas": 1}
    created = await http.put(f"/admin/v1/deployments/{VICTIM_DEPLOYMENT}", json=deployment,
                             headers=headers)  # fmt: skip
    assert created.status_code in (200, 201), created.text
    paths = [
        "/admin/v1/deployments",
        f"/admin/v1/organizations/{victim.organization_id}",
        f"/admin/v1/organizations/{victim.organization_id}/members",
        f"/admin/v1/projects/{victim.project_id}",
        f"/admin/v1/projects/{victim.project_id}/members",
        f"/admin/v1/projects/{victim.project_id}/keys",
        f"/admin/v1/projects/{victim.project_id}/limits",
        f"/admin/v1/projects?organization_id={victim.organization_id}",
        f"/admin/v1/users/{victim.user_id}",
    ]
    paths += [f"/admin/v1/keys/{key['id']}/limits" for key in victim.keys.values()]
    state = {}
    for path in paths:
        response = await http.get(path, headers=headers)
        assert response.status_code == 200, (path, response.text)
        state[path] = response.json()
    return state


async def attack(
    admin: Any, attacker_token: str, victim: Any, *, same_organization: bool = False
) -> list[str]:
    """Call every admin route against the victim; return the routes that leaked.

    With ``same_organization`` the attacker's project shares the victim's organization,
    which its keys may read (never change): the organization is then not a secret.
    """
    ids = victim_ids(victim)
    secrets = [*ids.values(), *(key["prefix"] for key in victim.keys.values())]
    if same_organization:
        secrets.remove(victim.organization_id)
    failures = []
    for operation in admin_operations(admin.app):
        method, path, names = operation.method, operation.path, operation.path_params
        unknown = [name for name in names if name not in ids]
        assert not unknown, f"{method} {path}: no victim value for {unknown}"
        url = path.format(**{name: ids[name] for name in names})
        query = {name: ids[name] for name in operation.query_params if name in ids}
        response = await admin.http.request(
            method,
            url,
            params=query,
            json=sample_body(operation, ids),
            headers=admin.headers(attacker_token),
        )
        if same_organization and names == ("organization_id",):
            allowed = {"GET": (200, 403)}.get(method, (403,))
            if response.status_code not in allowed:
                failures.append(f"{method} {path}: {response.status_code} {response.text[:200]}")
            continue
        if path.startswith("/admin/v1/deployments"):  # platform admins only
            if response.status_code != 403:
                failures.append(f"{method} {path}: {response.status_code} {response.text[:200]}")
            continue
        if names:
            if response.status_code != 404:
                failures.append(f"{method} {path}: {response.status_code} {response.text[:200]}")
            continue
        if response.status_code in (403, 404):
            continue
        leaked = [secret for secret in secrets if secret in response.text]
        if response.status_code >= 300 or leaked:
            failures.append(f"{method} {path}: {response.status_code} leaked {leaked}")
    return failures


async def test_every_admin_route_refuses_another_organizations_project(
    admin: Any, tenant_factory: Any
) -> None:
    victim = await tenant_factory("victim")
    attacker = await tenant_factory("attacker")
    before = await victim_state(admin, victim)
    assert len(admin_operations(admin.app)) >= 20, "the admin API lost routes?"

    failures = await attack(admin, attacker.token("owner"), victim)

    assert failures == []
    assert await victim_state(admin, victim) == before


async def test_a_sibling_project_in_the_same_organization_sees_nothing(
    admin: Any, tenant_factory: Any
) -> None:
    victim = await tenant_factory("victim")
    sibling = await tenant_factory("sibling", organization_id=victim.organization_id)
    before = await victim_state(admin, victim)

    failures = await attack(admin, sibling.token("owner"), victim, same_organization=True)

    assert failures == []
    assert await victim_state(admin, victim) == before


async def test_lower_roles_of_another_project_are_refused_too(
    admin: Any, tenant_factory: Any
) -> None:
    victim = await tenant_factory("victim")
    attacker = await tenant_factory("attacker")
    before = await victim_state(admin, victim)

    for role in ("admin", "member", "viewer"):
        assert await attack(admin, attacker.token(role), victim) == [], role
    assert await victim_state(admin, victim) == before
