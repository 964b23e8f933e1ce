"""Tool calls and structured output, enforced by constrained decoding on every engine.

The tools are ``strict`` (OpenAI's promise that arguments follow the schema): vLLM constrains
a call's arguments only then, forcing just the function's name otherwise. Thinking is off
(a random model never closes ``</think>``), and :func:`constrained_extras` adds what vLLM
needs for a random model to finish a JSON value.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
from conftest import MODEL_NAME
from e2e_helpers import chat_chunks, constrained_extras, post_json

from aiforge.testing.openai_schema import assert_conforms
from aiforge.testing.server import RemoteAiforgeServer

NO_THINK: dict[str, Any] = {"chat_template_kwargs": {"enable_thinking": False}}
WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "enum": ["Paris", "Oslo"]},
                "celsius": {"type": "boolean"},
            },
            "required": ["city", "celsius"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}
TIME: Any = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string", "enum": ["UTC", "CET"]}},
            "required": ["zone"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}
ASK: Any = [{"role": "user", "content": "What is the weather in Paris?"}]


def _check_call(call: Any, name: str) -> None:
    assert call.type == "function"
    assert call.function.name == name
    arguments = json.loads(call.function.arguments)
    schema = WEATHER if name == "get_weather" else TIME
    jsonschema.validate(arguments, schema["function"]["parameters"])


def test_tool_choice_named_and_required(server: RemoteAiforgeServer) -> None:
    client = server.client()
    named = client.chat.completions.create(
        model=MODEL_NAME,
        messages=ASK,
        tools=[WEATHER, TIME],
        max_tokens=64,
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        parallel_tool_calls=False,
        extra_body={**NO_THINK, **constrained_extras(server)},
    )
    calls = named.choices[0].message.tool_calls
    assert calls
    assert len(calls) == 1
    _check_call(calls[0], "get_time")
    required = client.chat.completions.create(
        model=MODEL_NAME,
        messages=ASK,
        tools=[WEATHER, TIME],
        max_tokens=96,
        tool_choice="required",
        parallel_tool_calls=False,
        extra_body={**NO_THINK, **constrained_extras(server)},
    )
    calls = required.choices[0].message.tool_calls
    assert calls
    assert len(calls) == 1
    (call,) = calls
    assert call.type == "function"
    _check_call(call, call.function.name)
    assert required.choices[0].finish_reason == "tool_calls"


def test_tool_call_streamed_deltas(server: RemoteAiforgeServer) -> None:
    body = {
        "model": MODEL_NAME,
        "messages": ASK,
        "tools": [WEATHER],
        "max_tokens": 64,
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": False,
        **NO_THINK,
        **constrained_extras(server),
    }
    chunks = chat_chunks(server, body)
    deltas = [
        tc
        for c in chunks
        if c["choices"]
        for tc in c["choices"][0]["delta"].get("tool_calls") or []
    ]
    assert deltas, "the call must be streamed as tool_call deltas"
    first = deltas[0]
    assert first["index"] == 0
    assert first["id"]
    assert first["type"] == "function"
    assert first["function"]["name"] == "get_weather"
    arguments = "".join(d["function"].get("arguments") or "" for d in deltas)
    jsonschema.validate(json.loads(arguments), WEATHER["function"]["parameters"])


def test_tool_choice_auto_conforms(server: RemoteAiforgeServer) -> None:
    raw = post_json(
        server,
        "/v1/chat/completions",
        {
            "model": MODEL_NAME,
            "messages": ASK,
            "tools": [WEATHER],
            "tool_choice": "auto",
            "max_tokens": 16,
            **NO_THINK,
        },
    )
    assert raw.status_code == 200
    assert_conforms("CreateChatCompletionResponse", raw.json())


def test_json_schema_output_validates(server: RemoteAiforgeServer) -> None:
    schema = {
        "type": "object",
        "properties": {
            "answer": {"type": "string", "enum": ["yes", "no"]},
            "sure": {"type": "boolean"},
            "level": {"type": "integer", "minimum": 0, "maximum": 9},
        },
        "required": ["answer", "sure", "level"],
        "additionalProperties": False,
    }
    completion = server.client().chat.completions.create(
        model=MODEL_NAME,
        messages=[{"role": "user", "content": "Is the sky blue?"}],
        max_tokens=64,
        extra_body={**NO_THINK, **constrained_extras(server)},
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "verdict", "schema": schema, "strict": True},
        },
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    jsonschema.validate(json.loads(choice.message.content or ""), schema)


def test_json_object_output_parses(server: RemoteAiforgeServer) -> None:
    completion = server.client().chat.completions.create(
        model=MODEL_NAME,
        messages=[{"role": "user", "content": "Reply in JSON."}],
        max_tokens=128,
        extra_body={**NO_THINK, **constrained_extras(server)},
        response_format={"type": "json_object"},
    )
    content = completion.choices[0].message.content or ""
    assert content.lstrip().startswith("{")
    if completion.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(content), dict)


def test_invalid_schema_is_a_400_on_response_format(server: RemoteAiforgeServer) -> None:
    raw = post_json(
        server,
        "/v1/chat/completions",
        {
            "model": MODEL_NAME,
            "messages": ASK,
            "max_tokens": 4,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "no-such-type"}},
            },
        },
    )
    assert raw.status_code == 400
    assert raw.json()["error"]["param"] == "response_format"
