"""The gateway end to end over real sockets: a fake replica behind the real app."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
from gateway_fakes import MODEL, Gateway, fake_replica

from aiforge.testing.server import free_port, running_app
from aiforge.types import LimitExceeded, Principal


def _sse_payloads(text: str) -> list[str]:
    return [line.removeprefix("data: ") for line in text.split("\n\n") if line.strip()]


async def test_non_streamed_chat_is_passed_through_and_metered(gateway: Gateway) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers) as client:
        response = await client.post(
            "/v1/chat/completions", json={"model": MODEL, "prompt": "a b c", "max_tokens": 5}
        )
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "a b c"
    assert response.json()["usage"]["completion_tokens"] == 3
    (event,) = gateway.usage.events
    assert (event.prompt_tokens, event.completion_tokens, event.status_code) == (7, 3, 200)
    assert (event.key_id, event.project_id, event.replica, event.kind) == ("k1", "p1", "r0", "chat")
    assert not event.stream
    assert not event.cancelled
    assert event.latency_ms > 0
    ((model, estimate),) = gateway.admission.admitted
    assert model == MODEL
    assert estimate > 5
    assert [tokens for _, tokens in gateway.admission.settled] == [10]


async def test_stream_without_include_usage_asks_replica_and_strips_usage(gateway: Gateway) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers) as client:
        response = await client.post(
            "/v1/chat/completions", json={"model": MODEL, "prompt": "x y", "stream": True}
        )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    payloads = _sse_payloads(response.text)
    assert payloads[-1] == "[DONE]"
    chunks = [orjson.loads(p) for p in payloads[:-1]]
    assert all(chunk["choices"] for chunk in chunks), "the usage chunk must not reach the client"
    assert all("usage" not in chunk for chunk in chunks)
    assert gateway.replica_app.state.bodies[0]["stream_options"] == {
        "include_usage": True, "continuous_usage_stats": True}  # fmt: skip
    (event,) = await gateway.usage.wait_for(1)
    assert (event.prompt_tokens, event.completion_tokens) == (7, 2)
    assert event.stream
    assert not event.cancelled
    assert event.ttft_ms is not None
    assert [tokens for _, tokens in gateway.admission.settled] == [9]


async def test_stream_with_include_usage_keeps_usage_chunk(gateway: Gateway) -> None:
    body = {"model": MODEL, "prompt": "x y z", "stream": True,
            "stream_options": {"include_usage": True}}  # fmt: skip
    async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers) as client:
        response = await client.post("/v1/chat/completions", json=body)
    chunks = [orjson.loads(p) for p in _sse_payloads(response.text)[:-1]]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 3
    assert all("usage" not in chunk for chunk in chunks[:-1]), "no usage the client did not ask"
    (event,) = await gateway.usage.wait_for(1)
    assert event.completion_tokens == 3


async def test_cancelled_stream_is_metered_exactly(gateway: Gateway) -> None:
    body = {"model": MODEL, "prompt": " ".join(["w"] * 50), "stream": True, "delay_s": 0.05}
    received = 0
    async with (
        httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers) as client,
        client.stream("POST", "/v1/chat/completions", json=body) as response,
    ):
        async for line in response.aiter_lines():
            if '"content":"w ' in line:
                received += 1
                if received == 3:
                    break
    (event,) = await gateway.usage.wait_for(1)
    assert event.cancelled
    assert event.status_code == 200
    assert event.prompt_tokens == 7  # the replica's count, not an estimate
    assert 3 <= event.completion_tokens <= 5  # what the gateway forwarded before the close
    assert len(gateway.admission.settled) == 1
    assert gateway.fleet.directory.in_flight(MODEL, "r0") == 0


async def test_embeddings_are_metered(gateway: Gateway) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers) as client:
        response = await client.post("/v1/embeddings", json={"model": MODEL, "input": "hi"})
    assert response.status_code == 200
    (event,) = gateway.usage.events
    assert (event.kind, event.prompt_tokens, event.completion_tokens) == ("embedding", 3, 0)


def _error(response: httpx.Response) -> dict[str, object]:
    body = response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    error: dict[str, object] = body["error"]
    return error


async def test_user_errors_get_openai_envelopes(gateway: Gateway) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers) as client:
        unknown = await client.post("/v1/chat/completions", json={"model": "nope"})
        malformed = await client.post("/v1/chat/completions", content=b"{not json")
        no_model = await client.post("/v1/chat/completions", json={"messages": []})
        too_big = await client.post(
            "/v1/chat/completions", json={"model": MODEL, "prompt": "x" * 5000}
        )

        async def chunked() -> AsyncIterator[bytes]:
            for _ in range(10):
                yield b" " * 1000

        too_big_chunked = await client.post("/v1/chat/completions", content=chunked())
        upstream = await client.post(
            "/v1/chat/completions", json={"model": MODEL, "messages": "fail"}
        )
    assert unknown.status_code == 404
    assert _error(unknown)["code"] == "model_not_found"
    assert _error(unknown)["param"] == "model"
    assert malformed.status_code == 400
    assert _error(malformed)["code"] == "invalid_json"
    assert no_model.status_code == 400
    assert _error(no_model)["param"] == "model"
    assert too_big.status_code == 413
    assert too_big_chunked.status_code == 413
    assert upstream.status_code == 400
    assert _error(upstream)["param"] == "messages"
    statuses = [e.status_code for e in gateway.usage.events]
    assert statuses == [404, 400, 400, 413, 413, 400]
    assert len(gateway.replica_app.state.bodies) == 1  # only the last reached the replica


async def test_auth_is_required_on_every_v1_route(gateway: Gateway) -> None:
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        missing = await client.post("/v1/chat/completions", json={"model": MODEL})
        wrong = await client.get("/v1/models", headers={"authorization": "Bearer sk-bad"})
        health = await client.get("/health")
    assert missing.status_code == 401
    assert _error(missing)["code"] == "invalid_api_key"
    assert wrong.status_code == 401
    assert health.status_code == 200
    assert gateway.usage.events == []


async def test_model_allowlist_and_limits(gateway: Gateway) -> None:
    handler = gateway.app.state.handler
    limited = handler.authenticator.principals["sk-good"]
    handler.authenticator.principals["sk-narrow"] = type(limited)(
        key_id="k2", project_id="p1", organization_id="o1", role="member",
        allowed_models=frozenset({"other"}))  # fmt: skip
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        forbidden = await client.post("/v1/chat/completions", json={"model": MODEL},
                                      headers={"authorization": "Bearer sk-narrow"})  # fmt: skip
        models = await client.get("/v1/models", headers={"authorization": "Bearer sk-narrow"})
        gateway.admission.refuse = LimitExceeded("requests_per_minute", "Too many requests.",
                                                 retry_after_s=2.5)  # fmt: skip
        refused = await client.post("/v1/chat/completions", json={"model": MODEL},
                                    headers=gateway.headers)  # fmt: skip
    assert forbidden.status_code == 403
    assert _error(forbidden)["param"] == "model"
    assert models.json()["data"] == []
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "3"
    assert "requests_per_minute" in str(_error(refused)["message"])
    assert _error(refused)["code"] == "rate_limit_exceeded"
    assert [e.status_code for e in gateway.usage.events] == [403, 429]
    assert gateway.replica_app.state.bodies == []


async def test_dead_replica_gives_503_and_retry_uses_another(gateway: Gateway) -> None:
    gateway.fleet.deploy(MODEL, policy="round_robin")
    gateway.fleet.add(MODEL, "dead", f"http://127.0.0.1:{free_port()}")
    async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers) as client:
        answers = [
            await client.post("/v1/chat/completions", json={"model": MODEL}) for _ in range(4)
        ]
        gateway.fleet.set_state("r0", "starting")
        down = await client.post("/v1/chat/completions", json={"model": MODEL})
        health = await client.get("/health")
    assert [a.status_code for a in answers] == [200] * 4
    assert {e.replica for e in gateway.usage.events[:4]} == {"r0"}
    assert down.status_code == 503
    assert _error(down)["code"] == "engine_unavailable"
    assert "starting" in str(_error(down)["message"])
    # The gateway never writes replica state: "dead" stays ready until the controller says
    # otherwise, so the fleet is degraded, not down.
    assert (health.status_code, health.json()["status"]) == (200, "degraded")
    states = {r["id"]: r["state"] for d in health.json()["deployments"] for r in d["replicas"]}
    assert states == {"r0": "starting", "dead": "ready"}


async def test_models_health_and_metrics(gateway: Gateway) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers) as client:
        models = await client.get("/v1/models")
        one = await client.get(f"/v1/models/{MODEL}")
        await client.post("/v1/chat/completions", json={"model": MODEL, "prompt": "a b"})
        metrics = await client.get("/metrics")
        unknown_path = await client.get("/v1/nothing")
    assert [m["id"] for m in models.json()["data"]] == [MODEL]
    assert one.json()["id"] == MODEL
    text = metrics.text
    assert f'aiforge_gateway_requests_total{{kind="chat",model="{MODEL}",status="200"}} 1.0' in text
    assert f'aiforge_gateway_completion_tokens_total{{model="{MODEL}"}} 2.0' in text
    assert "aiforge_gateway_request_latency_seconds_bucket" in text
    assert unknown_path.status_code == 404
    assert "error" in unknown_path.json()


async def test_sixteen_concurrent_streams_are_each_metered(gateway: Gateway) -> None:
    async def one(client: httpx.AsyncClient, i: int) -> int:
        body = {"model": MODEL, "prompt": " ".join(["t"] * (i + 1)), "stream": True,
                "delay_s": 0.005}  # fmt: skip
        response = await client.post("/v1/chat/completions", json=body)
        return response.text.count('"content":"t ')

    async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers) as client:
        counts = await asyncio.gather(*(one(client, i) for i in range(16)))
    assert counts == list(range(1, 17))
    events = await gateway.usage.wait_for(16)
    assert sorted(e.completion_tokens for e in events) == list(range(1, 17))
    assert len({e.request_id for e in events}) == 16


async def test_second_replica_shares_load(gateway: Gateway) -> None:
    async with running_app(fake_replica("second")) as url:
        gateway.fleet.deploy(MODEL, policy="round_robin")
        gateway.fleet.add(MODEL, "r1", url)
        async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers) as client:
            for _ in range(4):
                await client.post("/v1/chat/completions", json={"model": MODEL})
    assert sorted(e.replica for e in gateway.usage.events) == ["r0", "r0", "r1", "r1"]


async def test_every_v1_response_names_its_request_and_the_ledger_record(gateway: Gateway) -> None:
    chat = {"model": MODEL, "prompt": "a b"}
    async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers) as client:
        answered = await client.post(
            "/v1/chat/completions", json=chat, headers={"x-request-id": "client-chosen"}
        )
        streamed = await client.post("/v1/chat/completions", json={**chat, "stream": True})
        unknown = await client.post("/v1/chat/completions", json={"model": "nope"})
        too_big = await client.post("/v1/chat/completions", json={"model": MODEL, "p": "x" * 5000})
        unauthorized = await client.post("/v1/chat/completions", json=chat,
                                         headers={"authorization": "Bearer sk-bad"})  # fmt: skip
        models = await client.get("/v1/models")
        gateway.admission.refuse = LimitExceeded("requests_per_minute", "slow", retry_after_s=1)
        limited = await client.post("/v1/chat/completions", json=chat)
        health = await client.get("/health")
    responses = [answered, streamed, unknown, too_big, unauthorized, models, limited]
    assert [r.status_code for r in responses] == [200, 200, 404, 413, 401, 200, 429]
    ids = [r.headers["x-request-id"] for r in responses]
    assert all(i.startswith("req-") and len(i) == 36 for i in ids), ids
    assert len(set(ids)) == len(ids)
    assert "x-request-id" not in health.headers
    events = await gateway.usage.wait_for(5)
    assert [e.request_id for e in events] == [ids[0], ids[1], ids[2], ids[3], ids[6]]
    # The replica saw the gateway's id, never the client's, and echoed it.
    assert gateway.replica_app.state.request_ids == ids[:2]
    # Only the requests sent to a replica were journaled as opened, with a crash placeholder.
    opened = gateway.usage.opened
    assert [(p.request_id, p.status_code, p.error_type) for p in opened] == [
        (ids[0], 502, "gateway_crashed"), (ids[1], 502, "gateway_crashed")]  # fmt: skip
    assert all(p.prompt_tokens > 0 and p.completion_tokens == 0 for p in opened)


class _BrokenAuthenticator:
    def authenticate(self, authorization: str | None) -> Principal:
        raise RuntimeError("a bug in the key cache")


async def test_an_unexpected_error_is_a_500_envelope_with_the_request_id(gateway: Gateway) -> None:
    gateway.app.state.handler.authenticator = _BrokenAuthenticator()
    async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers) as client:
        chat = await client.post("/v1/chat/completions", json={"model": MODEL})
        models = await client.get("/v1/models")
    for response in (chat, models):
        assert response.status_code == 500
        assert response.json()["error"]["type"] == "server_error"
        assert response.json()["error"]["code"] == "gateway_error"
        assert response.headers["x-request-id"].startswith("req-")
    assert gateway.replica_app.state.bodies == []


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        ("application/json", 200),
        ("application/json; charset=utf-8", 200),
        ("application/vnd.api+json", 200),
        ("text/plain", 400),
        ("application/x-www-form-urlencoded", 400),
        ("multipart/form-data; boundary=x", 400),
    ],
)
async def test_a_body_declared_as_something_other_than_json_is_refused(
    gateway: Gateway, content_type: str, status: int
) -> None:
    headers = {**gateway.headers, "content-type": content_type}
    async with httpx.AsyncClient(base_url=gateway.url, headers=headers) as client:
        answer = await client.post("/v1/chat/completions", content=b'{"model": "tiny"}')
    assert answer.status_code == status, answer.text
    if status == 400:
        assert _error(answer)["code"] == "invalid_content_type"
        assert gateway.replica_app.state.bodies == []
