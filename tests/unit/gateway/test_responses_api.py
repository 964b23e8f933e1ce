"""``/v1/responses`` in process, driven with the official ``openai`` client: a scripted chat
replica behind the real gateway app, stored Responses in memory, two projects' keys.

Every Response body and every stream event is checked against the OpenAPI fixture."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from gateway_fakes import KeyAuth, RecordingAdmission, RecordingUsage

from aiforge.config import Settings
from aiforge.gateway.app import create_app
from aiforge.gateway.responses import InMemoryResponseStore
from aiforge.gateway.responses.sse import SseReader
from aiforge.testing.fleet import StaticFleet
from aiforge.testing.openai_schema import assert_conforms
from aiforge.testing.server import running_app
from aiforge.types import Principal

MODEL = "tiny"
ALICE = Principal(key_id="ka", project_id="project-a", organization_id="o", role="member")
BOB = Principal(key_id="kb", project_id="project-b", organization_id="o", role="member")
USAGE = {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}
CALL = {"index": 0, "id": "call_1", "type": "function",
        "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}  # fmt: skip
SCRIPTS: dict[str, list[dict[str, Any]]] = {
    "text": [{"content": "Hello"}, {"content": " world"}],
    "think": [{"reasoning_content": "Let me see."}, {"content": "Yes."}],
    "tool": [{"tool_calls": [CALL]}],
}
WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def _script_of(body: dict[str, Any]) -> str:
    last = body["messages"][-1]
    return str(last.get("content")) if last["role"] == "user" else "text"


def scripted_replica() -> FastAPI:
    """A chat replica answering by script: the last user message names it (``text``,
    ``think``, ``tool``, ``length``, ``break``: an error event mid-stream, ``refuse``: 400)."""
    app = FastAPI()
    app.state.bodies = []

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body = orjson.loads(await request.body())
        app.state.bodies.append(body)
        script = _script_of(body)
        if script == "refuse":
            error = {"error": {"message": "no", "type": "invalid_request_error",
                               "param": "messages", "code": None}}  # fmt: skip
            return Response(orjson.dumps(error), status_code=400, media_type="application/json")
        deltas = SCRIPTS.get(script, SCRIPTS["text"])
        finish = {"tool": "tool_calls", "length": "length"}.get(script, "stop")
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": None}
            for delta in deltas:
                for key, value in delta.items():
                    if key == "tool_calls":
                        message["tool_calls"] = [{k: v for k, v in c.items() if k != "index"}
                                                 for c in value]  # fmt: skip
                    else:
                        message[key] = (message.get(key) or "") + value
            answer = {"id": "c", "object": "chat.completion", "created": 1, "model": MODEL,
                      "choices": [{"index": 0, "message": message, "finish_reason": finish,
                                   "logprobs": None}], "usage": USAGE}  # fmt: skip
            return Response(orjson.dumps(answer), media_type="application/json")
        return StreamingResponse(_events(deltas, finish, script), media_type="text/event-stream")

    return app


async def _events(deltas: list[dict[str, Any]], finish: str, script: str) -> AsyncIterator[bytes]:
    base = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": MODEL}
    for number, delta in enumerate(deltas):
        last = number == len(deltas) - 1 and script != "break"
        choice = {"index": 0, "delta": delta, "finish_reason": finish if last else None}
        yield b"data: " + orjson.dumps({**base, "choices": [choice], "usage": USAGE}) + b"\n\n"
        if script == "break":
            error = {"error": {"message": "engine died", "type": "server_error"}}
            yield b"data: " + orjson.dumps(error) + b"\n\n"
            return
    yield b"data: " + orjson.dumps({**base, "choices": [], "usage": USAGE}) + b"\n\n"
    yield b"data: [DONE]\n\n"


@dataclass
class Setup:
    url: str
    replica: FastAPI
    usage: RecordingUsage
    store: InMemoryResponseStore
    clients: list[openai.AsyncOpenAI] = field(default_factory=list)

    def client(self, key: str = "sk-alice") -> openai.AsyncOpenAI:
        """An official client (closed with the fixture)."""
        client = openai.AsyncOpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0)
        self.clients.append(client)
        return client

    @property
    def chat_bodies(self) -> list[dict[str, Any]]:
        bodies: list[dict[str, Any]] = self.replica.state.bodies
        return bodies


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    replica = scripted_replica()
    async with running_app(replica) as replica_url:
        fleet = StaticFleet()
        fleet.add(MODEL, "r0", replica_url)
        usage, store = RecordingUsage(), InMemoryResponseStore(capacity=50)
        app = create_app(
            Settings(data_dir=tmp_path),
            directory=fleet.directory,
            authenticator=KeyAuth({"sk-alice": ALICE, "sk-bob": BOB}),
            admission=RecordingAdmission(),
            usage_sink=usage,
            response_store=store,
        )
        async with running_app(app) as url:
            setup = Setup(url=url, replica=replica, usage=usage, store=store)
            try:
                yield setup
            finally:
                for client in setup.clients:
                    await client.close()


async def _raw(setup: Setup, body: dict[str, Any], key: str = "sk-alice") -> httpx.Response:
    async with httpx.AsyncClient(base_url=setup.url, timeout=30) as http:
        return await http.post("/v1/responses", json=body,
                               headers={"authorization": f"Bearer {key}"})  # fmt: skip


async def _raw_events(setup: Setup, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The events of a streamed create, each checked against the fixture (and its SSE name)."""
    response = await _raw(setup, {**body, "stream": True})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    events = []
    for block in response.content.decode().split("\n\n"):
        if not block.strip():
            continue
        name, data = block.split("\n", 1)
        event = orjson.loads(data.removeprefix("data: "))
        assert name == f"event: {event['type']}"
        assert_conforms("ResponseStreamEvent", event)
        events.append(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert not SseReader().feed(response.content + b"\n\n")[-1].startswith("[DONE]")
    return events


async def test_text_input_is_answered_as_a_response_and_metered_once(setup: Setup) -> None:
    response = await _raw(setup, {"model": MODEL, "input": "text", "instructions": "Be brief."})
    assert response.status_code == 200, response.text
    body = response.json()
    assert_conforms("Response", body)
    assert body["status"] == "completed"
    assert body["id"].startswith("resp_")
    (sent,) = setup.chat_bodies
    assert sent["messages"] == [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "text"}]  # fmt: skip
    (event,) = await setup.usage.wait_for(1)
    assert event.request_id == response.headers["x-request-id"]
    assert (event.kind, event.key_id, event.prompt_tokens, event.completion_tokens) == (
        "chat", "ka", 9, 4)  # fmt: skip
    client = setup.client()
    parsed = await client.responses.create(model=MODEL, input="text")
    assert parsed.output_text == "Hello world"
    assert parsed.usage is not None
    assert parsed.usage.input_tokens == 9


async def test_a_stream_follows_openais_event_sequence(setup: Setup) -> None:
    events = await _raw_events(setup, {"model": MODEL, "input": "think"})
    kinds = [e["type"].removeprefix("response.") for e in events]
    assert kinds[:2] == ["created", "in_progress"]
    assert kinds[-1] == "completed"
    assert "reasoning_text.delta" in kinds
    assert "output_text.delta" in kinds
    final = events[-1]["response"]
    assert_conforms("Response", final)
    assert [item["type"] for item in final["output"]] == ["reasoning", "message"]
    assert final["usage"]["output_tokens"] == 4
    assert setup.chat_bodies[-1]["stream_options"]["include_usage"] is True
    stored = await setup.client().responses.retrieve(final["id"])
    assert stored.output_text == "Yes."
    assert stored.status == "completed"


async def test_the_sdk_streams_text_and_tool_calls(setup: Setup) -> None:
    client = setup.client()
    async with client.responses.stream(model=MODEL, input="text") as stream:
        deltas = [
            event.delta async for event in stream if event.type == "response.output_text.delta"
        ]
        final = await stream.get_final_response()
    assert "".join(deltas) == final.output_text == "Hello world"
    called = await client.responses.create(model=MODEL, input="tool", tools=[WEATHER],
                                           tool_choice="required")  # fmt: skip
    (call,) = called.output
    assert call.type == "function_call"
    assert call.name == "get_weather"
    assert orjson.loads(call.arguments) == {"city": "Oslo"}
    assert setup.chat_bodies[-1]["tool_choice"] == "required"


async def test_a_mid_stream_failure_ends_with_response_failed(setup: Setup) -> None:
    events = await _raw_events(setup, {"model": MODEL, "input": "break"})
    assert [e["type"] for e in events][-2:] == ["error", "response.failed"]
    failed = events[-1]["response"]
    assert failed["status"] == "failed"
    assert failed["error"]["message"] == "engine died"
    stored = await setup.store.get(ALICE.project_id, failed["id"])
    assert stored is not None
    assert stored.status == "failed"
    (event,) = await setup.usage.wait_for(1)
    assert event.stream is True


async def test_a_length_cut_is_incomplete(setup: Setup) -> None:
    response = await setup.client().responses.create(model=MODEL, input="length",
                                                     max_output_tokens=4)  # fmt: skip
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert setup.chat_bodies[-1]["max_completion_tokens"] == 4


async def test_previous_response_id_continues_the_stored_conversation(setup: Setup) -> None:
    client = setup.client()
    first = await client.responses.create(model=MODEL, input="tool", tools=[WEATHER])
    call = first.output[0]
    assert call.type == "function_call"
    second = await client.responses.create(
        model=MODEL, previous_response_id=first.id, instructions="Answer in French.",
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "cold"}],
    )  # fmt: skip
    assert second.previous_response_id == first.id
    assert setup.chat_bodies[-1]["messages"] == [
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "tool"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "cold"},
    ]  # fmt: skip
    third = await client.responses.create(model=MODEL, previous_response_id=second.id,
                                          input="text")  # fmt: skip
    assert len(setup.chat_bodies[-1]["messages"]) == 5  # instructions are not carried over
    items = await client.responses.input_items.list(third.id, order="asc")
    assert [item.type for item in items.data] == [
        "message",
        "function_call",
        "function_call_output",
        "message",
        "message",
    ]
    async with httpx.AsyncClient(base_url=setup.url) as http:
        page = await http.get(f"/v1/responses/{third.id}/input_items", params={"limit": 2},
                              headers={"authorization": "Bearer sk-alice"})  # fmt: skip
    assert_conforms("ResponseItemList", page.json())
    assert page.json()["has_more"] is True
    assert page.json()["data"][0]["content"][0]["text"] == "text"  # newest first


async def test_retrieve_delete_and_store_false(setup: Setup) -> None:
    client = setup.client()
    created = await client.responses.create(model=MODEL, input="text", metadata={"k": "v"})
    async with httpx.AsyncClient(base_url=setup.url) as http:
        got = await http.get(f"/v1/responses/{created.id}",
                             headers={"authorization": "Bearer sk-alice"})  # fmt: skip
    assert_conforms("Response", got.json())
    assert got.json()["metadata"] == {"k": "v"}
    await client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.delete(created.id)
    unstored = await client.responses.create(model=MODEL, input="text", store=False)
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(unstored.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.create(model=MODEL, input="x", previous_response_id=unstored.id)


async def test_another_projects_response_is_not_found(setup: Setup) -> None:
    mine = await setup.client("sk-alice").responses.create(model=MODEL, input="text")
    theirs = setup.client("sk-bob")
    attempts: list[Callable[[], Awaitable[object]]] = [
        lambda: theirs.responses.retrieve(mine.id),
        lambda: theirs.responses.delete(mine.id),
        lambda: theirs.responses.input_items.list(mine.id),
        lambda: theirs.responses.create(model=MODEL, input="x", previous_response_id=mine.id),
    ]
    for attempt in attempts:
        with pytest.raises(openai.NotFoundError) as refused:
            await attempt()
        assert refused.value.status_code == 404
    assert (await setup.client("sk-alice").responses.retrieve(mine.id)).id == mine.id


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"input": "x", "background": True}, 400, "background"),
        ({"input": "x", "tools": [{"type": "web_search"}]}, 400, "tools[0].type"),
        ({"input": "x", "max_output_tokens": "5"}, 400, "max_output_tokens"),
        ({"input": "refuse"}, 400, "messages"),
        ({"input": "x", "model": "nope"}, 404, "model"),
    ],
)
async def test_bad_requests_get_openai_errors(
    setup: Setup, body: dict[str, Any], status: int, param: str
) -> None:
    response = await _raw(setup, {"model": MODEL, **body})
    assert response.status_code == status, response.text
    assert_conforms("ErrorResponse", response.json())
    assert response.json()["error"]["param"] == param
    assert len(setup.store) == 0


async def test_unknown_keys_and_bad_list_parameters(setup: Setup) -> None:
    assert (await _raw(setup, {"model": MODEL, "input": "x"}, key="sk-nobody")).status_code == 401
    created = await setup.client().responses.create(model=MODEL, input="text")
    async with httpx.AsyncClient(base_url=setup.url) as http:
        headers = {"authorization": "Bearer sk-alice"}
        for params, param in [({"limit": "0"}, "limit"), ({"order": "up"}, "order"),
                              ({"after": "msg_nope"}, "after")]:  # fmt: skip
            page = await http.get(f"/v1/responses/{created.id}/input_items", params=params,
                                  headers=headers)  # fmt: skip
            assert (page.status_code, page.json()["error"]["param"]) == (400, param)
