"""``/admin/v1/usage`` and ``aiforge usage`` against a real ledger (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from typer.testing import CliRunner

from aiforge.platform.api.usage import build_usage_router
from aiforge.platform.db.engine import make_engine
from aiforge.platform.db.migrate import upgrade_to_head
from aiforge.platform.metering import UsageLedger
from aiforge.types import AuthError, Principal, UsageEvent

DAY = datetime(2025, 7, 1, 9, tzinfo=UTC).timestamp()
PRINCIPALS = {
    "admin": Principal("k-admin", "p-admin", "o", "owner", is_platform_admin=True),
    "a": Principal("k-a", "p-a", "o", "viewer"),
    "b": Principal("k-b", "p-b", "o", "owner"),
}


class TokenAuthenticator:
    def authenticate(self, authorization: str | None) -> Principal:
        token = (authorization or "").removeprefix("Bearer ")
        if token not in PRINCIPALS:
            raise AuthError("Incorrect API key provided.")
        return PRINCIPALS[token]


@pytest.fixture
def ledger(database_url: str, tmp_path: Path) -> Iterator[UsageLedger]:
    upgrade_to_head(database_url)
    engine = make_engine(database_url)
    ledger = UsageLedger(engine, tmp_path / "journal")
    for i, (key, project) in enumerate([("k-a", "p-a")] * 3 + [("k-b", "p-b")] * 2):
        ledger.record(
            UsageEvent(f"r{i}", key, project, "o", "qwen", "chat", 200, 10, i, started_at=DAY)
        )
    ledger.flush()
    yield ledger
    engine.dispose()


@pytest.fixture
async def client(ledger: UsageLedger) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.state.authenticator = TokenAuthenticator()
    app.include_router(build_usage_router(ledger))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {name}"}


async def test_a_project_key_sees_only_its_project(client: httpx.AsyncClient) -> None:
    response = await client.get("/admin/v1/usage?group_by=key", headers=auth("a"))
    assert response.status_code == 200
    body = response.json()
    assert body["project_id"] == "p-a"
    assert [(row["group"], row["requests"], row["total_tokens"]) for row in body["data"]] == [
        ("k-a", 3, 33)
    ]
    refused = await client.get("/admin/v1/usage?project_id=p-b", headers=auth("a"))
    assert refused.status_code == 404
    assert refused.json()["error"]["param"] == "project_id"


async def test_admin_sees_everything_and_gets_csv(client: httpx.AsyncClient) -> None:
    response = await client.get("/admin/v1/usage?group_by=project", headers=auth("admin"))
    assert [row["group"] for row in response.json()["data"]] == ["p-a", "p-b"]
    csv_response = await client.get(
        "/admin/v1/usage",
        params={"group_by": "day", "format": "csv", "since": "2025-07-01T00:00:00"},
        headers=auth("admin"),
    )
    assert csv_response.headers["content-type"].startswith("text/csv")
    assert csv_response.text.splitlines()[1] == "2025-07-01,5,0,50,10,0,60"


async def test_errors_use_the_openai_envelope(client: httpx.AsyncClient) -> None:
    unauthenticated = await client.get("/admin/v1/usage")
    assert unauthenticated.status_code == 401
    bad = await client.get("/admin/v1/usage?group_by=colour", headers=auth("admin"))
    assert bad.status_code == 400
    assert set(bad.json()["error"]) == {"message", "type", "param", "code"}


def test_cli_prints_and_exports(
    ledger: UsageLedger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import typer

    from aiforge.cli import usage as usage_cli
    from aiforge.platform.api import client as api_client

    app = FastAPI()
    app.state.authenticator = TokenAuthenticator()
    app.include_router(build_usage_router(ledger))
    original = api_client.AdminApiClient.__init__

    def with_app(self: api_client.AdminApiClient, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)  # type: ignore[arg-type]
        self.transport = _SyncAsgi(app)

    monkeypatch.setattr(api_client.AdminApiClient, "__init__", with_app)
    cli = typer.Typer()
    usage_cli.register(cli)
    cli.command("noop")(lambda: None)
    out = tmp_path / "usage.csv"
    result = CliRunner().invoke(
        cli, ["usage", "--by", "model", "--api-key", "a", "--csv", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert out.read_text().splitlines() == [
        "model,requests,errors,prompt_tokens,completion_tokens,cached_tokens,total_tokens",
        "qwen,3,0,30,3,0,33",
    ]
    table = CliRunner().invoke(
        cli, ["usage", "--by", "key", "--api-key", "admin", "--since", "3000d"]
    )
    assert table.exit_code == 0, table.output
    assert "k-b" in table.output
    refused = CliRunner().invoke(cli, ["usage", "--project", "p-b", "--api-key", "a"])
    assert refused.exit_code == 1


class _SyncAsgi(httpx.BaseTransport):
    """Drive the ASGI app from the CLI's synchronous client (in a private event loop)."""

    def __init__(self, app: FastAPI) -> None:
        self._transport = httpx.ASGITransport(app=app)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        import asyncio

        async def send() -> httpx.Response:
            async with httpx.AsyncClient(transport=self._transport, base_url="http://test") as c:
                response = await c.send(
                    c.build_request(request.method, str(request.url), headers=request.headers)
                )
                await response.aread()
                return response

        response = asyncio.run(send())
        return httpx.Response(
            response.status_code, headers=response.headers, content=response.content
        )
