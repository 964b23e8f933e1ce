"""No admin route answers 5xx or plain text, whatever value a field carries.

Every integer, date-time and string field of every admin request body and query (found in
the OpenAPI schema, so a field added later is covered too) is sent values at and beyond
the edges: integers past 64 bits, times that leave the calendar once moved to UTC,
strings with NUL and longer than any column. Each answer must be below 500 and, when an
error, OpenAI's JSON envelope.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

ADMIN_PREFIX = "/admin/v1"
INTEGERS: tuple[Any, ...] = (2**63, 2**63 - 1, -(2**63) - 1, 2**64, 2**31, 10**40, -1, 1e300)
DATETIMES = (
    "9999-12-31T23:59:59-12:00",
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59Z",
    "0001-01-01T00:00:00Z",
    "2030-01-01T00:00:00",
    "99999-01-01T00:00:00Z",
)
STRINGS = ("a\x00b", "x" * 5000, "\u202e\u200b")


@dataclass(frozen=True)
class Case:
    method: str
    path: str
    where: str  # "body" or "query"
    field: str
    kind: str  # "integer", "date-time" or "string"


def _kind(schema: dict[str, Any]) -> str | None:
    for option in schema.get("anyOf", [schema]):
        if option.get("type") == "integer":
            return "integer"
        if option.get("type") == "string" and option.get("format") == "date-time":
            return "date-time"
        if option.get("type") == "string" and "enum" not in option:
            return "string"
    return None


def _schema(spec: dict[str, Any], ref: str) -> dict[str, Any]:
    schema: dict[str, Any] = spec["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    return schema


def cases(spec: dict[str, Any]) -> Iterator[tuple[Case, str | None]]:
    """Each (operation, field) to fuzz, with the body schema's name."""
    for path, item in spec["paths"].items():
        if not path.startswith(ADMIN_PREFIX):
            continue
        for method, operation in item.items():
            for param in operation.get("parameters", []):
                kind = _kind(param.get("schema", {}))
                if param["in"] == "query" and kind is not None:
                    yield Case(method.upper(), path, "query", param["name"], kind), None
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if body is None:
                continue
            ref = body["schema"]["$ref"]
            for name, prop in _schema(spec, ref)["properties"].items():
                kind = _kind(prop)
                if kind is not None:
                    yield Case(method.upper(), path, "body", name, kind), ref.rsplit("/", 1)[-1]


def values(kind: str) -> tuple[Any, ...]:
    return {"integer": INTEGERS, "date-time": DATETIMES, "string": STRINGS}[kind]


def base_bodies(ids: dict[str, str]) -> dict[str, dict[str, Any]]:
    """A valid body per schema, so the extreme value is the only thing wrong."""
    deployment = {"model": "demo", "replicas": 0}
    return {
        "OrganizationCreate": {"name": "fuzz-org"},
        "ProjectCreate": {"name": "fuzz-project", "organization_id": ids["organization_id"]},
        "UserCreate": {"email": "fuzz@example.com"},
        "MembershipCreate": {"email": "fuzz-member@example.com", "role": "viewer"},
        "ApiKeyCreate": {"name": "fuzz", "role": "viewer"},
        "ApiKeyUpdate": {"name": "fuzz"},
        "LimitsUpdate": {"requests_per_minute": 1},
        "DeploymentCreate": {"name": "fuzz-new", **deployment},
        "DeploymentApply": deployment,
        "DeploymentUpdate": {"replicas": 0},
        "DeploymentScale": {"replicas": 0},
    }


def assert_envelope(response: httpx.Response, what: str) -> None:
    assert response.status_code < 500, f"{what}: {response.status_code} {response.text[:300]}"
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/json"), what
        error = response.json()["error"]
        assert isinstance(error["message"], str), what
        assert error["message"], what
        assert isinstance(error["type"], str), what


async def test_extreme_values_in_every_admin_field_answer_4xx_envelopes(
    admin: Any, tenant_factory: Any
) -> None:
    tenant = await tenant_factory("fuzz")
    ids = {
        "organization_id": tenant.organization_id,
        "project_id": tenant.project_id,
        "key_id": tenant.key_id("member"),
        "user_id": tenant.user_id,
        "name": "fuzz",
    }
    created = await admin.http.put(
        "/admin/v1/deployments/fuzz", json={"model": "demo", "replicas": 0}, headers=admin.headers()
    )
    assert created.status_code in (200, 201), created.text
    spec = admin.app.openapi()
    bodies = base_bodies(ids)
    found = {"integer": 0, "date-time": 0, "string": 0}
    for case, schema in cases(spec):
        found[case.kind] += 1
        url = case.path.format(**ids)
        for value in values(case.kind):
            what = f"{case.method} {case.path} {case.where}.{case.field}={value!r:.40}"
            if case.where == "query":
                response = await admin.http.request(
                    case.method, url, params={case.field: str(value)}, headers=admin.headers()
                )
            else:
                assert schema in bodies, f"{case.path}: add a base body for {schema}"
                body = {**bodies[schema], case.field: value}
                response = await admin.http.request(
                    case.method,
                    url,
                    content=_json(body),
                    headers={**admin.headers(), "content-type": "application/json"},
                )
            assert_envelope(response, what)
    assert found["integer"] >= 15, found  # limits (x2 routes) and deployment counts
    assert found["date-time"] >= 4, found  # expires_at (create, update), since, until


def _json(body: dict[str, Any]) -> bytes:
    """JSON with integers of any size (orjson refuses past 64 bits)."""
    return json.dumps(body).encode()


async def test_the_calendar_edges_reported_by_the_audit_are_400s(admin: Any) -> None:
    headers = admin.headers()
    project = admin.runtime.default.project_id
    for expires_at in ("9999-12-31T23:59:59-12:00", "0001-01-01T00:00:00+14:00"):
        response = await admin.http.post(
            f"/admin/v1/projects/{project}/keys", json={"expires_at": expires_at}, headers=headers
        )
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == "expires_at"
    response = await admin.http.get(
        "/admin/v1/usage", params={"since": "0001-01-01T00:00:00+14:00"}, headers=headers
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "since"
    response = await admin.http.put(
        f"/admin/v1/projects/{project}/limits",
        content=b'{"requests_per_minute": 9223372036854775808}',
        headers={**headers, "content-type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "requests_per_minute"


async def test_path_ids_with_nul_or_huge_lengths_answer_4xx_envelopes(admin: Any) -> None:
    """Ids come from the path too: NUL (which PostgreSQL refuses in text) and 5000 chars."""
    for path, item in admin.app.openapi()["paths"].items():
        if not path.startswith(ADMIN_PREFIX) or "{" not in path:
            continue
        for method in item:
            for value in ("a%00b", "x" * 5000):  # %00: NUL once the server decodes the path
                names = [part[1:-1] for part in path.split("/") if part.startswith("{")]
                url = path.format(**dict.fromkeys(names, value))
                response = await admin.http.request(
                    method.upper(), url, json={}, headers=admin.headers()
                )
                assert_envelope(response, f"{method.upper()} {path} {value[:10]}")
