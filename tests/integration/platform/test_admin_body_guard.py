"""Every admin route checks the key, then the body's size, before reading the body.

A client streams a 200 MB body at each route (found in the OpenAPI schema, so a route
added later is covered too), straight into the ASGI app; the test counts the bytes the
app pulls from the receive channel. Without a key: 401 and not one byte read. With a key:
413, and never more than the limit (plus one chunk) read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from starlette.types import Message

from aiforge.platform.api.guard import ADMIN_MAX_BODY_BYTES

BIG = 200 * 1024 * 1024
CHUNK = 64 * 1024
PLACEHOLDERS = {
    "organization_id": "org_x",
    "project_id": "proj_x",
    "key_id": "key_x",
    "user_id": "user_x",
    "name": "demo",
}


def admin_routes(app: Any) -> list[tuple[str, str]]:
    routes = []
    for path, item in app.openapi()["paths"].items():
        if path.startswith("/admin/"):
            routes += [(method.upper(), path.format(**PLACEHOLDERS)) for method in item]
    return routes


@dataclass
class StreamingClient:
    """Sends ``total`` bytes in chunks as the app asks for them; counts what it handed over."""

    total: int
    pulled: int = 0
    response: list[Message] = field(default_factory=list)

    async def receive(self) -> Message:
        if self.pulled >= self.total:
            return {"type": "http.disconnect"}
        size = min(CHUNK, self.total - self.pulled)
        self.pulled += size
        return {"type": "http.request", "body": b"x" * size, "more_body": self.pulled < self.total}

    async def send(self, message: Message) -> None:
        self.response.append(message)

    @property
    def status(self) -> int:
        return int(self.response[0]["status"])

    @property
    def error(self) -> dict[str, Any]:
        body = b"".join(m.get("body", b"") for m in self.response[1:])
        parsed: dict[str, Any] = orjson.loads(body)["error"]
        return parsed


async def stream(
    app: Any, method: str, path: str, *, key: str | None, declare_length: bool
) -> StreamingClient:
    headers = [(b"content-type", b"application/json")]
    if key is not None:
        headers.append((b"authorization", f"Bearer {key}".encode()))
    if declare_length:
        headers.append((b"content-length", str(BIG).encode()))
    else:
        headers.append((b"transfer-encoding", b"chunked"))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    client = StreamingClient(total=BIG)
    await app(scope, client.receive, client.send)
    return client


@pytest.mark.parametrize("declare_length", [True, False], ids=["content-length", "chunked"])
async def test_without_a_key_no_route_reads_a_byte_of_the_body(
    admin: Any, declare_length: bool
) -> None:
    routes = admin_routes(admin.app)
    assert len(routes) >= 25
    for method, path in routes:
        client = await stream(admin.app, method, path, key=None, declare_length=declare_length)
        assert client.status == 401, (method, path, client.response)
        assert client.error["code"] == "missing_api_key"
        assert client.pulled == 0, (method, path)
        client = await stream(admin.app, method, path, key="sk-af-wrong", declare_length=True)
        assert (client.status, client.pulled) == (401, 0), (method, path)


@pytest.mark.parametrize("declare_length", [True, False], ids=["content-length", "chunked"])
async def test_with_a_key_an_oversized_body_is_refused_having_read_at_most_the_limit(
    admin: Any, declare_length: bool
) -> None:
    limit = min(ADMIN_MAX_BODY_BYTES, admin.runtime.settings.max_body_bytes)
    for method, path in admin_routes(admin.app):
        client = await stream(
            admin.app, method, path, key=admin.admin_key, declare_length=declare_length
        )
        assert client.status == 413, (method, path, client.response)
        assert client.error["code"] == "request_too_large"
        assert client.pulled <= (0 if declare_length else limit + CHUNK), (method, path)


async def test_a_body_within_the_limit_reaches_the_route(admin: Any) -> None:
    response = await admin.http.post(
        "/admin/v1/organizations", json={"name": "x" * 150}, headers=admin.headers()
    )
    assert response.status_code == 201, response.text
    assert response.json()["name"] == "x" * 150
