"""The Responses request body: what is accepted, and the 400 (naming the parameter) for the
rest — invalid values and features the gateway cannot serve."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from aiforge.protocol.openai.errors import OpenAIError
from aiforge.protocol.openai.responses import (
    FunctionCallItem,
    FunctionCallOutputItem,
    MessageItem,
    ReasoningItem,
    TextFormatJsonSchema,
    ToolChoiceFunction,
    parse_create_request,
)

WEATHER = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}


def _refusal(body: dict[str, Any]) -> OpenAIError:
    with pytest.raises(OpenAIError) as refused:
        parse_create_request(orjson.dumps(body))
    assert refused.value.status_code == 400
    return refused.value


def test_a_string_input_is_one_user_message() -> None:
    request = parse_create_request(b'{"model": "m", "input": "Hello"}')
    (item,) = request.input_items()
    assert isinstance(item, MessageItem)
    assert (item.role, item.content) == ("user", "Hello")
    assert request.store is True
    assert request.stream is False


def test_every_item_kind_is_read_by_its_type() -> None:
    body = {
        "model": "m",
        "input": [
            {"role": "developer", "content": [{"type": "input_text", "text": "be brief"}]},
            {"type": "reasoning", "id": "rs_1", "summary": [],
             "content": [{"type": "reasoning_text", "text": "hmm"}]},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "42"},
            {"type": "message", "role": "assistant",
             "content": [{"type": "output_text", "text": "ok", "annotations": []}]},
        ],
        "tools": [WEATHER],
        "tool_choice": {"type": "function", "name": "get_weather"},
        "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}}},
        "reasoning": {"effort": "high", "summary": "auto"},
        "metadata": {"k": "v"},
    }  # fmt: skip
    request = parse_create_request(orjson.dumps(body))
    kinds = [type(item) for item in request.input_items()]
    assert kinds == [MessageItem, ReasoningItem, FunctionCallItem, FunctionCallOutputItem,
                     MessageItem]  # fmt: skip
    assert isinstance(request.tool_choice, ToolChoiceFunction)
    assert request.text is not None
    assert isinstance(request.text.format, TextFormatJsonSchema)
    assert request.reasoning is not None
    assert request.reasoning.effort == "high"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m"}, "input"),
        ({"model": "m", "input": []}, "input"),
        ({"model": "m", "input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
        ({"model": "m", "input": [{"role": "user", "content": [{"type": "input_text",
                                                                "text": 1}]}]},
         "input[0].content[0].text"),
        ({"model": "m", "input": "x", "max_output_tokens": 0}, "max_output_tokens"),
        ({"model": "m", "input": "x", "temperature": "1"}, "temperature"),
        ({"model": "m", "input": "x", "stream": 1}, "stream"),
        ({"model": "m", "input": "x", "tool_choice": {"type": "function"}}, "tool_choice.name"),
        ({"model": "m", "input": "x", "reasoning": {"effort": "huge"}}, "reasoning.effort"),
        ({"model": "m", "input": "x", "text": {"format": {"type": "json_schema", "name": "a b",
                                                          "schema": {}}}},
         "text.format.name"),
        ({"model": "m", "input": "x", "tool_choice": {"type": "function", "name": "nope"},
          "tools": [WEATHER]}, "tool_choice"),
        ({"model": "m", "input": "x", "tool_choice": "required"}, "tool_choice"),
        ({"model": "m", "input": "x", "tools": [WEATHER, WEATHER]}, "tools"),
        ({"model": "m", "input": "x", "metadata": {str(i): "v" for i in range(17)}}, "metadata"),
    ],
)  # fmt: skip
def test_invalid_values_name_their_parameter(body: dict[str, Any], param: str) -> None:
    assert _refusal(body).param == param


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"background": True}, "background"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"tools": [WEATHER, {"type": "file_search", "vector_store_ids": []}]}, "tools[1].type"),
        ({"tool_choice": {"type": "web_search_preview"}}, "tool_choice"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"prompt": {"id": "pmpt_1"}}, "prompt"),
        ({"truncation": "auto"}, "truncation"),
        ({"include": ["file_search_call.results"]}, "include[0]"),
        ({"include": [{}]}, "include[0]"),  # unhashable: was a 500 (found by the fuzz run)
        ({"include": ["reasoning.encrypted_content", ["x"]]}, "include[1]"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
        ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
         "input[0].content[0].type"),
        ({"input": [{"type": "reasoning", "summary": [], "encrypted_content": "x"}]},
         "input[0].encrypted_content"),
    ],
)  # fmt: skip
def test_unsupported_features_are_refused_by_name(extra: dict[str, Any], param: str) -> None:
    error = _refusal({"model": "m", "input": "x", **extra})
    assert error.param == param
    assert error.code in ("unsupported_parameter", "unsupported_tool")
    assert "not supported" in error.message


def test_a_body_that_is_not_a_json_object_is_refused() -> None:
    for body in (b"[1]", b"{nope"):
        with pytest.raises(OpenAIError) as refused:
            parse_create_request(body)
        assert (refused.value.status_code, refused.value.code) == (400, "invalid_json")


def test_background_false_and_harmless_extras_are_accepted() -> None:
    body = {"model": "m", "input": "x", "background": False, "include": [],
            "service_tier": "auto", "truncation": "disabled", "some_future_field": 1}  # fmt: skip
    assert parse_create_request(orjson.dumps(body)).model == "m"
