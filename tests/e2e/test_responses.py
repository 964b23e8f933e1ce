"""The Responses API end to end: ``aiforge serve --model demo`` driven with the official
``openai`` client (``responses.create/stream/retrieve/delete/input_items.list``), every body
and every stream event checked against the OpenAPI fixture, stored state per project, and
metering through the admin usage API.

The demo model has random weights: it never closes ``</think>`` by itself, so requests that
should answer turn thinking off (``reasoning.effort: none``), and constrained output
(tools, JSON schema) is what makes its answers checkable.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import openai
import orjson
import pytest

from aiforge.testing.openai_schema import assert_conforms
from aiforge.testing.server import RemoteAiforgeServer

MODEL = "demo"
NO_THINKING: Any = {"effort": "none"}
WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "enum": ["Paris", "Oslo"]}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}
TIME: Any = {
    "type": "function",
    "name": "get_time",
    "parameters": {
        "type": "object",
        "properties": {"zone": {"type": "string", "enum": ["UTC", "CET"]}},
        "required": ["zone"],
        "additionalProperties": False,
    },
    "strict": True,
}
VERDICT = {
    "type": "object",
    "properties": {"verdict": {"type": "string", "enum": ["yes", "no"]}},
    "required": ["verdict"],
    "additionalProperties": False,
}


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RemoteAiforgeServer]:
    """``aiforge serve --model demo`` with the platform on (API keys, usage ledger)."""
    root = tmp_path_factory.mktemp("e2e-responses")
    with RemoteAiforgeServer(MODEL, engine="auto", data_dir=root / "data") as server:
        yield server


@pytest.fixture(scope="session")
def client(demo: RemoteAiforgeServer) -> openai.OpenAI:
    return demo.client()


def _headers(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def _raw(demo: RemoteAiforgeServer, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(demo.url_for("v1/responses"), json=body,
                          headers=_headers(demo.api_key), timeout=120.0)  # fmt: skip
    assert response.status_code == 200, response.text
    parsed: dict[str, Any] = response.json()
    assert_conforms("Response", parsed)
    return parsed


def _raw_events(demo: RemoteAiforgeServer, body: dict[str, Any]) -> list[dict[str, Any]]:
    """A streamed create over the wire: every event checked against the fixture."""
    events: list[dict[str, Any]] = []
    with httpx.stream("POST", demo.url_for("v1/responses"), json={**body, "stream": True},
                      headers=_headers(demo.api_key), timeout=120.0) as response:  # fmt: skip
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data:"):
                event = orjson.loads(line.removeprefix("data:").strip())
                assert_conforms("ResponseStreamEvent", event)
                events.append(event)
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    return events


def test_text_input(demo: RemoteAiforgeServer, client: openai.OpenAI) -> None:
    body = _raw(demo, {"model": MODEL, "input": "Hello", "max_output_tokens": 12,
                       "reasoning": NO_THINKING})  # fmt: skip
    assert body["status"] in ("completed", "incomplete")
    assert body["usage"]["output_tokens"] >= 1
    response = client.responses.create(model=MODEL, input="Hello", max_output_tokens=12,
                                       reasoning=NO_THINKING)  # fmt: skip
    assert response.output_text
    assert response.output[0].type == "message"


def test_message_input_with_instructions(demo: RemoteAiforgeServer) -> None:
    body = _raw(demo, {
        "model": MODEL, "instructions": "Answer in one word.", "max_output_tokens": 8,
        "reasoning": NO_THINKING,
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "Capital of France?"}]},
            {"role": "assistant", "content": "Paris."},
            {"type": "message", "role": "user", "content": "And of Norway?"},
        ],
    })  # fmt: skip
    assert body["instructions"] == "Answer in one word."
    assert body["usage"]["input_tokens"] > 20  # the whole conversation reached the model


def test_a_stream_sends_openais_event_sequence(
    demo: RemoteAiforgeServer, client: openai.OpenAI
) -> None:
    events = _raw_events(demo, {"model": MODEL, "input": "Tell me a story.",
                                "max_output_tokens": 16, "reasoning": NO_THINKING})  # fmt: skip
    kinds = [event["type"] for event in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert "response.output_text.delta" in kinds
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done",
                          "response.output_item.done", "response.incomplete"]  # fmt: skip
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    final = events[-1]["response"]
    assert final["output"][0]["content"][0]["text"] == text
    assert final["usage"]["output_tokens"] == 16
    # The SDK's helper wants ``response.completed``: constrained output finishes for sure.
    verdict: Any = {"format": {"type": "json_schema", "name": "verdict", "schema": VERDICT}}
    with client.responses.stream(model=MODEL, input="Yes?", max_output_tokens=200,
                                 reasoning=NO_THINKING, text=verdict) as stream:  # fmt: skip
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        streamed = stream.get_final_response()
    assert "".join(deltas) == streamed.output_text
    jsonschema.validate(json.loads(streamed.output_text), VERDICT)


@pytest.mark.parametrize("choice", ["required", {"type": "function", "name": "get_time"}])
def test_function_tools_with_tool_choice(demo: RemoteAiforgeServer, choice: Any) -> None:
    body = _raw(demo, {"model": MODEL, "input": "What is the weather in Paris?",
                       "tools": [WEATHER, TIME], "tool_choice": choice,
                       "reasoning": NO_THINKING, "max_output_tokens": 200})  # fmt: skip
    calls = [item for item in body["output"] if item["type"] == "function_call"]
    assert calls, body["output"]
    for call in calls:
        tool = WEATHER if call["name"] == "get_weather" else TIME
        jsonschema.validate(json.loads(call["arguments"]), tool["parameters"])
        assert call["call_id"]
    if isinstance(choice, dict):
        assert {call["name"] for call in calls} == {"get_time"}
    events = _raw_events(demo, {"model": MODEL, "input": "Weather?", "tools": [WEATHER],
                                "tool_choice": choice if choice == "required" else
                                {"type": "function", "name": "get_weather"},
                                "reasoning": NO_THINKING, "max_output_tokens": 200})  # fmt: skip
    done = [e for e in events if e["type"] == "response.function_call_arguments.done"]
    deltas = [e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta"]
    assert done
    assert "".join(deltas) == "".join(e["arguments"] for e in done)


def test_text_format_json_schema(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model=MODEL, input="Is the sky blue?", reasoning=NO_THINKING, max_output_tokens=200,
        text={"format": {"type": "json_schema", "name": "verdict", "schema": VERDICT,
                         "strict": True}},
    )  # fmt: skip
    assert response.status == "completed"
    jsonschema.validate(json.loads(response.output_text), VERDICT)


def test_reasoning_effort_turns_thinking_on_and_off(demo: RemoteAiforgeServer) -> None:
    """``effort: none`` turns thinking off: Qwen's template then writes an empty think block
    into the prompt (more input tokens) and nothing is reasoning. With ``high`` thinking is
    on; whether the random demo opens ``<think>`` is up to its weights, so its reasoning
    item is checked when there is one (its shape is pinned by the unit tests)."""
    body: dict[str, Any] = {"model": MODEL, "input": "Think about it.", "max_output_tokens": 24}
    off = _raw(demo, {**body, "reasoning": {"effort": "none"}})
    on = _raw(demo, {**body, "reasoning": {"effort": "high"}})
    assert [item["type"] for item in off["output"]] == ["message"]
    assert off["usage"]["output_tokens_details"]["reasoning_tokens"] == 0
    assert off["usage"]["input_tokens"] > on["usage"]["input_tokens"]
    assert (off["reasoning"]["effort"], on["reasoning"]["effort"]) == ("none", "high")
    reasoning = [item for item in on["output"] if item["type"] == "reasoning"]
    if reasoning:
        assert on["output"][0] is reasoning[0]
        assert on["usage"]["output_tokens_details"]["reasoning_tokens"] > 0


def test_max_output_tokens_makes_an_incomplete_response(client: openai.OpenAI) -> None:
    response = client.responses.create(model=MODEL, input="Write an essay.",
                                       max_output_tokens=5, reasoning=NO_THINKING)  # fmt: skip
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.usage is not None
    assert response.usage.output_tokens == 5


def test_stored_state_chain_retrieve_items_delete(
    demo: RemoteAiforgeServer, client: openai.OpenAI
) -> None:
    first = client.responses.create(model=MODEL, input="My name is Ada.", max_output_tokens=6,
                                    reasoning=NO_THINKING)  # fmt: skip
    second = client.responses.create(model=MODEL, input="What is my name?",
                                     previous_response_id=first.id, max_output_tokens=6,
                                     reasoning=NO_THINKING)  # fmt: skip
    assert second.previous_response_id == first.id
    assert second.usage is not None
    assert first.usage is not None
    assert second.usage.input_tokens > first.usage.input_tokens  # it read the first turn
    got = httpx.get(demo.url_for(f"v1/responses/{second.id}"), headers=_headers(demo.api_key))
    assert got.status_code == 200
    assert_conforms("Response", got.json())
    assert client.responses.retrieve(second.id).output_text == second.output_text
    items = client.responses.input_items.list(second.id, order="asc")
    texts = [item.content[0].text for item in items.data if item.type == "message"]  # type: ignore[union-attr]
    assert texts == ["My name is Ada.", first.output_text, "What is my name?"]
    page = httpx.get(demo.url_for(f"v1/responses/{second.id}/input_items"),
                     params={"limit": 1}, headers=_headers(demo.api_key))  # fmt: skip
    assert_conforms("ResponseItemList", page.json())
    assert page.json()["has_more"] is True
    client.responses.delete(second.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(second.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.input_items.list(second.id)
    unstored = client.responses.create(model=MODEL, input="x", store=False, max_output_tokens=2,
                                       reasoning=NO_THINKING)  # fmt: skip
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)


def _new_project_key(demo: RemoteAiforgeServer, name: str) -> tuple[str, str]:
    """A fresh organization and project with one key: (key id, secret)."""
    with httpx.Client(base_url=demo.url, headers=_headers(demo.api_key), timeout=30) as http:
        org = http.post("/admin/v1/organizations", json={"name": name}).json()
        project = http.post(
            "/admin/v1/projects", json={"name": name, "organization_id": org["id"]}
        ).json()
        key = http.post(f"/admin/v1/projects/{project['id']}/keys",
                        json={"name": f"{name}-key", "role": "member"})  # fmt: skip
        assert key.status_code == 201, key.text
    return str(key.json()["id"]), str(key.json()["key"])


def _client_for(demo: RemoteAiforgeServer, key: str) -> openai.OpenAI:
    """A client with ``key``, once the gateway's key cache knows the key."""
    other = openai.OpenAI(base_url=demo.base_url, api_key=key, max_retries=0, timeout=120.0)
    deadline = time.monotonic() + 15
    while True:
        try:
            other.models.list()
            return other
        except openai.AuthenticationError:
            if time.monotonic() > deadline:
                other.close()
                raise
            time.sleep(0.2)


def test_another_projects_responses_are_not_found(
    demo: RemoteAiforgeServer, client: openai.OpenAI
) -> None:
    mine = client.responses.create(model=MODEL, input="secret", max_output_tokens=3,
                                   reasoning=NO_THINKING)  # fmt: skip
    _, key = _new_project_key(demo, "responses-other")
    with _client_for(demo, key) as other:
        _check_isolated(client, other, mine.id)


def _check_isolated(client: openai.OpenAI, other: openai.OpenAI, mine: str) -> None:
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(mine)
    with pytest.raises(openai.NotFoundError):
        other.responses.input_items.list(mine)
    with pytest.raises(openai.NotFoundError):
        other.responses.delete(mine)
    with pytest.raises(openai.NotFoundError):
        other.responses.create(model=MODEL, input="x", previous_response_id=mine)
    theirs = other.responses.create(model=MODEL, input="hi", max_output_tokens=3,
                                    reasoning=NO_THINKING)  # fmt: skip
    assert other.responses.retrieve(theirs.id).id == theirs.id
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(theirs.id)
    assert client.responses.retrieve(mine).id == mine


def test_each_response_is_metered_once(demo: RemoteAiforgeServer) -> None:
    key_id, key = _new_project_key(demo, "responses-metered")
    with _client_for(demo, key) as other:
        whole = other.responses.create(model=MODEL, input="Count.", max_output_tokens=4,
                                       reasoning=NO_THINKING)  # fmt: skip
        events = other.responses.create(model=MODEL, input="Count.", max_output_tokens=4,
                                        reasoning=NO_THINKING, stream=True)  # fmt: skip
        (streamed,) = [e.response for e in events if e.type == "response.incomplete"]
    assert whole.usage is not None
    assert streamed.usage is not None
    expected = whole.usage.total_tokens + streamed.usage.total_tokens
    deadline = time.monotonic() + 20
    while True:
        report = httpx.get(demo.url_for("admin/v1/usage"), headers=_headers(demo.api_key),
                           params={"group_by": "key", "key_id": key_id}).json()  # fmt: skip
        rows = report["data"]
        if (rows and rows[0]["requests"] >= 2) or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert [(row["requests"], row["errors"], row["total_tokens"]) for row in rows] == [
        (2, 0, expected)
    ]


def test_unsupported_features_are_clear_400s(demo: RemoteAiforgeServer) -> None:
    refusals: list[tuple[dict[str, Any], str]] = [
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"background": True}, "background"),
    ]
    for extra, param in refusals:
        response = httpx.post(demo.url_for("v1/responses"), headers=_headers(demo.api_key),
                              json={"model": MODEL, "input": "x", **extra})  # fmt: skip
        assert response.status_code == 400
        assert_conforms("ErrorResponse", response.json())
        assert response.json()["error"]["param"] == param
