"""Admin routers answer every refusal in OpenAI's error envelope, on any app."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
import typer
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

from aiforge.cli.admin import parse_expiry
from aiforge.platform.api.deps import CurrentPrincipal, authorize_project
from aiforge.platform.api.errors import admin_router
from aiforge.platform.domain.errors import Conflict
from aiforge.types import AuthError, Principal

OWNER = Principal(key_id="k", project_id="proj_a", organization_id="o", role="owner")
VIEWER = Principal(key_id="v", project_id="proj_a", organization_id="o", role="viewer")


class FakeAuthenticator:
    """Two known tokens; anything else is refused like the real cache refuses it."""

    def authenticate(self, authorization: str | None) -> Principal:
        known = {"Bearer owner": OWNER, "Bearer viewer": VIEWER}
        if authorization not in known:
            raise AuthError("Incorrect API key provided.")
        return known[authorization]


class Body(BaseModel):
    count: int


def app() -> TestClient:
    router = admin_router(prefix="/admin/v1")

    @router.post("/projects/{project_id}/things")
    def change(project_id: str, body: Body, principal: CurrentPrincipal) -> dict[str, int]:
        authorize_project(principal, project_id, write=True)
        if body.count == 0:
            raise Conflict("a thing like that exists")
        return {"count": body.count}

    application = FastAPI()
    application.state.authenticator = FakeAuthenticator()
    application.include_router(router)
    return TestClient(application)


def error(response: object) -> dict[str, object]:
    body = response.json()  # type: ignore[attr-defined]
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return dict(body["error"])


def test_success_passes_through() -> None:
    response = app().post(
        "/admin/v1/projects/proj_a/things",
        json={"count": 2},
        headers={"Authorization": "Bearer owner"},
    )
    assert response.status_code == 200
    assert response.json() == {"count": 2}


def test_missing_or_wrong_key_is_401_with_a_bearer_challenge() -> None:
    client = app()
    for headers in ({}, {"Authorization": "Bearer nope"}):
        response = client.post(
            "/admin/v1/projects/proj_a/things", json={"count": 1}, headers=headers
        )
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert error(response)["code"] == "invalid_api_key"


@pytest.mark.parametrize(
    ("project", "key", "body", "status", "param"),
    [
        ("proj_b", "owner", {"count": 1}, 404, "project_id"),
        ("proj_a", "viewer", {"count": 1}, 403, None),
        ("proj_a", "owner", {"count": "many"}, 400, "count"),
        ("proj_a", "owner", {}, 400, "count"),
        ("proj_a", "owner", {"count": 0}, 409, None),
    ],
)
def test_refusals_use_the_envelope(
    project: str, key: str, body: dict[str, object], status: int, param: str | None
) -> None:
    response = app().post(
        f"/admin/v1/projects/{project}/things",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == status
    assert error(response)["param"] == param


def test_a_router_without_an_authenticator_is_a_logged_wiring_error_in_the_envelope(
    caplog: pytest.LogCaptureFixture,
) -> None:
    router = admin_router()

    @router.get("/x")
    def read(principal: CurrentPrincipal) -> str:
        return principal.key_id

    application = FastAPI()
    application.include_router(router)
    with caplog.at_level(logging.ERROR, logger="aiforge.platform.api.errors"):
        response = TestClient(application).get("/x")
    assert response.status_code == 500
    assert error(response)["type"] == "server_error"
    assert "app.state.authenticator" in caplog.text


def test_parse_expiry() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    assert parse_expiry("30d", now=now) == now + timedelta(days=30)
    assert parse_expiry("12h", now=now) == now + timedelta(hours=12)
    assert parse_expiry("2031-02-03T04:05:06Z", now=now) == datetime(
        2031, 2, 3, 4, 5, 6, tzinfo=UTC
    )
    assert parse_expiry("2031-02-03", now=now) == datetime(2031, 2, 3, tzinfo=UTC)
    with pytest.raises(typer.BadParameter):
        parse_expiry("soon", now=now)
