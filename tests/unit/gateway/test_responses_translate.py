"""A Responses request as a chat completion request, and conversation items as messages."""

from __future__ import annotations

import itertools
from typing import Any

import orjson

from aiforge.gateway.responses.items import chat_messages, stored_items
from aiforge.gateway.responses.translate import chat_body
from aiforge.protocol.openai.responses import CreateResponseRequest, parse_create_request
from aiforge.testing.openai_schema import assert_conforms

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def _request(**fields: Any) -> CreateResponseRequest:
    return parse_create_request(orjson.dumps({"model": "demo", "input": "Hi", **fields}))


def _ids() -> Any:
    counter = itertools.count()
    return lambda prefix: f"{prefix}_{next(counter)}"


def _body(request: CreateResponseRequest) -> dict[str, Any]:
    return chat_body(request, stored_items(request.input_items(), _ids()))


def test_text_input_with_instructions_becomes_system_and_user_messages() -> None:
    body = _body(_request(instructions="Be brief.", max_output_tokens=9, temperature=0.5))
    assert body == {
        "model": "demo",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
        ],
        "stream": False,
        "max_completion_tokens": 9,
        "temperature": 0.5,
    }


def test_a_stream_asks_for_usage() -> None:
    body = _body(_request(stream=True))
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


def test_function_tools_and_tool_choice_map_to_chat_tools() -> None:
    body = _body(_request(tools=[WEATHER], tool_choice={"type": "function", "name": "get_weather"},
                          parallel_tool_calls=False))  # fmt: skip
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather in a city.",
                "parameters": WEATHER["parameters"],
                "strict": True,  # the Responses API's default
            },
        }
    ]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert body["parallel_tool_calls"] is False
    loose = _body(_request(tools=[{**WEATHER, "strict": False}], tool_choice="required"))
    assert loose["tools"][0]["function"]["strict"] is False
    assert loose["tool_choice"] == "required"


def test_text_format_maps_to_response_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    body = _body(_request(text={"format": {"type": "json_schema", "name": "answer",
                                           "schema": schema, "strict": True}}))  # fmt: skip
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": schema, "strict": True},
    }
    assert _body(_request(text={"format": {"type": "json_object"}}))["response_format"] == {
        "type": "json_object"
    }
    assert "response_format" not in _body(_request(text={"format": {"type": "text"}}))


def test_reasoning_effort_maps_to_chat_reasoning_effort() -> None:
    for effort, expected in [("none", "none"), ("low", "low"), ("high", "high"),
                             ("xhigh", "high"), ("max", "high")]:  # fmt: skip
        assert _body(_request(reasoning={"effort": effort}))["reasoning_effort"] == expected
    assert "reasoning_effort" not in _body(_request(reasoning={"summary": "auto"}))


def test_stored_items_give_every_item_an_id_and_conform_to_the_item_schema() -> None:
    request = _request(
        input=[
            {"role": "user", "content": "What is the weather?"},
            {"role": "developer", "content": "Use tools."},
            {"type": "function_call", "call_id": "c1", "name": "get_weather",
             "arguments": "{\"city\":\"Oslo\"}"},
            {"type": "function_call_output", "call_id": "c1", "output": "cold"},
            {"role": "assistant", "content": "It is cold."},
            {"type": "reasoning", "id": "rs_given", "summary": [],
             "content": [{"type": "reasoning_text", "text": "think"}]},
        ]
    )  # fmt: skip
    items = stored_items(request.input_items(), _ids())
    assert [item["id"] for item in items] == ["msg_0", "msg_1", "fc_2", "fco_3", "msg_4",
                                              "rs_given"]  # fmt: skip
    page = {"object": "list", "data": items, "first_id": "msg_0", "last_id": "rs_given",
            "has_more": False}  # fmt: skip
    assert_conforms("ResponseItemList", page)


def test_a_conversation_becomes_chat_messages() -> None:
    items: list[dict[str, Any]] = [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
        {"type": "reasoning", "summary": [], "content": [{"type": "reasoning_text",
                                                           "text": "call it"}]},
        {"type": "message", "role": "assistant",
         "content": [{"type": "output_text", "text": "Checking.", "annotations": []}]},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call", "call_id": "c2", "name": "g", "arguments": "{\"x\":1}"},
        {"type": "function_call_output", "call_id": "c1", "output": "one"},
        {"type": "function_call_output", "call_id": "c2", "output": "two"},
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "dropped"}]},
        {"type": "message", "role": "developer",
         "content": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]},
        {"type": "function_call", "call_id": "c3", "name": "f", "arguments": "{}"},
    ]  # fmt: skip
    assert chat_messages(items) == [
        {"role": "user", "content": "Hi"},
        {
            "role": "assistant",
            "content": "Checking.",
            "reasoning_content": "call it",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                {"id": "c2", "type": "function",
                 "function": {"name": "g", "arguments": "{\"x\":1}"}},
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "one"},
        {"role": "tool", "tool_call_id": "c2", "content": "two"},
        {"role": "system", "content": "a\nb"},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "c3", "type": "function",
                         "function": {"name": "f", "arguments": "{}"}}]},
    ]  # fmt: skip


def test_images_become_image_url_parts() -> None:
    request = _request(input=[{"role": "user", "content": [
        {"type": "input_text", "text": "What is this?"},
        {"type": "input_image", "image_url": "data:image/png;base64,AAAA"},
    ]}])  # fmt: skip
    (message,) = _body(request)["messages"]
    assert message == {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA",
                                                "detail": "auto"}},
        ],
    }  # fmt: skip
