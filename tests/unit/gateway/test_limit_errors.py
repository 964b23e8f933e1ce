"""Refusals by the limits: OpenAI-shaped 429s, and a 503 when the limits store is down."""

from __future__ import annotations

import httpx
import pytest
from gateway_fakes import MODEL, Gateway

from aiforge.platform.limits.admission import LimitAdmission
from aiforge.platform.limits.policy import LimitPolicy
from aiforge.platform.limits.redis_store import RedisStore
from aiforge.testing.server import free_port
from aiforge.types import LimitExceeded, Principal


@pytest.mark.parametrize(
    ("limit_name", "kind"),
    [
        ("key.requests_per_minute", "requests"),
        ("project.max_concurrent", "requests"),
        ("key.tokens_per_minute", "tokens"),
        ("project.tokens_per_day", "tokens"),
        ("key.tokens_per_month", "tokens"),
    ],
)
async def test_429_names_the_limit_and_is_shaped_like_openai(
    gateway: Gateway, limit_name: str, kind: str
) -> None:
    gateway.admission.refuse = LimitExceeded(limit_name, "Rate limit reached.", retry_after_s=0.2)
    async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers) as client:
        refused = await client.post("/v1/chat/completions", json={"model": MODEL})
    assert refused.status_code == 429
    assert refused.json() == {
        "error": {
            "message": f"Rate limit reached. (limit: {limit_name})",
            "type": kind,
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }
    assert refused.headers["retry-after"] == "1"
    assert refused.headers["x-ratelimit-limit-name"] == limit_name
    (event,) = gateway.usage.events
    assert (event.status_code, event.error_type) == (429, "rate_limit_exceeded")


async def test_unreachable_limits_store_gives_503_envelope_and_one_record(
    gateway: Gateway,
) -> None:
    store = RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0")
    limited = LimitPolicy(requests_per_minute=100)

    def limits_for(principal: Principal) -> tuple[LimitPolicy, LimitPolicy]:
        return limited, LimitPolicy()

    gateway.app.state.handler.admission = LimitAdmission(store, limits_for)
    async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers) as client:
        first = await client.post("/v1/chat/completions", json={"model": MODEL})
        second = await client.post("/v1/chat/completions", json={"model": MODEL, "stream": True})
        health = await client.get("/health")
    for refused in (first, second):
        assert refused.status_code == 503
        error = refused.json()["error"]
        assert (error["type"], error["code"], error["param"]) == (
            "server_error",
            "limits_unavailable",
            None,
        )
        assert "rate-limit store is unavailable" in error["message"]
        assert refused.headers["x-request-id"]
    assert health.status_code == 200, "the gateway keeps serving"
    events = gateway.usage.events
    assert [(e.status_code, e.error_type) for e in events] == [(503, "limits_unavailable")] * 2
    assert [e.request_id for e in events] == [r.headers["x-request-id"] for r in (first, second)]
    assert gateway.replica_app.state.bodies == [], "nothing reached the replica"
    assert gateway.usage.opened == []
