"""The chat-chunks → Responses-events state machine: OpenAI's event sequence, every event and
Response checked against the OpenAPI fixture."""

from __future__ import annotations

import itertools
from typing import Any

import orjson

from aiforge.gateway.responses.events import ResponseStream, response_from_answer
from aiforge.gateway.responses.objects import ResponseFrame, response_usage
from aiforge.protocol.openai.responses import parse_create_request
from aiforge.testing.openai_schema import assert_conforms

USAGE = {"prompt_tokens": 11, "completion_tokens": 6, "total_tokens": 17,
         "prompt_tokens_details": {"cached_tokens": 4},
         "completion_tokens_details": {"reasoning_tokens": 2}}  # fmt: skip


def _stream(**fields: Any) -> ResponseStream:
    body = {"model": "demo", "input": "Hi", **fields}
    frame = ResponseFrame(id="resp_1", created_at=100, request=parse_create_request(
        orjson.dumps(body)))  # fmt: skip
    counter = itertools.count()
    return ResponseStream(frame, new_id=lambda p: f"{p}_{next(counter)}", clock=lambda: 123.0)


def _chunk(delta: dict[str, Any] | None = None, finish: str | None = None) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta or {}, "finish_reason": finish}
    return {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "demo",
            "choices": [choice]}  # fmt: skip


def _run(stream: ResponseStream, chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    events = stream.start()
    for chunk in chunks:
        events += stream.feed(chunk)
    events += stream.finish()
    _check(events)
    return events


def _check(events: list[dict[str, Any]]) -> None:
    """Every event conforms; sequence numbers count from 0; the terminal Response conforms."""
    for event in events:
        assert_conforms("ResponseStreamEvent", event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert_conforms("Response", events[-1]["response"])


def _types(events: list[dict[str, Any]]) -> list[str]:
    return [event["type"].removeprefix("response.") for event in events]


def test_a_text_answer_makes_one_message_item() -> None:
    stream = _stream()
    events = _run(stream, [
        _chunk({"role": "assistant", "content": ""}),
        _chunk({"content": "Hel"}),
        _chunk({"content": "lo"}, finish="stop"),
        {"choices": [], "usage": USAGE},
    ])  # fmt: skip
    assert _types(events) == [
        "created", "in_progress", "output_item.added", "content_part.added",
        "output_text.delta", "output_text.delta", "output_text.done", "content_part.done",
        "output_item.done", "completed",
    ]  # fmt: skip
    assert [e["delta"] for e in events if e["type"].endswith("output_text.delta")] == ["Hel", "lo"]
    final = events[-1]["response"]
    assert final["status"] == "completed"
    assert final["completed_at"] == 123
    assert final["output"] == [{
        "id": "msg_0", "type": "message", "status": "completed", "role": "assistant",
        "content": [{"type": "output_text", "text": "Hello", "annotations": [], "logprobs": []}],
    }]  # fmt: skip
    assert final["usage"] == {
        "input_tokens": 11, "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 0},
        "output_tokens": 6, "output_tokens_details": {"reasoning_tokens": 2}, "total_tokens": 17,
    }  # fmt: skip
    assert stream.final == final
    assert events[0]["response"]["status"] == "in_progress"
    assert not events[0]["response"]["output"]


def test_thinking_then_text_makes_a_reasoning_item_then_a_message() -> None:
    events = _run(_stream(reasoning={"effort": "high"}), [
        _chunk({"reasoning_content": "Let me "}),
        _chunk({"reasoning_content": "think."}),
        _chunk({"content": "Done."}, finish="stop"),
    ])  # fmt: skip
    assert _types(events) == [
        "created", "in_progress",
        "output_item.added", "content_part.added", "reasoning_text.delta",
        "reasoning_text.delta", "reasoning_text.done", "content_part.done", "output_item.done",
        "output_item.added", "content_part.added", "output_text.delta", "output_text.done",
        "content_part.done", "output_item.done", "completed",
    ]  # fmt: skip
    reasoning, message = events[-1]["response"]["output"]
    assert reasoning == {
        "id": "rs_0",
        "type": "reasoning",
        "summary": [],
        "status": "completed",
        "content": [{"type": "reasoning_text", "text": "Let me think."}],
    }
    assert [
        (e["output_index"], e["item"]["type"])
        for e in events
        if e["type"] == "response.output_item.done"
    ] == [(0, "reasoning"), (1, "message")]
    assert message["content"][0]["text"] == "Done."
    assert events[-1]["response"]["reasoning"] == {"effort": "high", "summary": None}


def test_tool_calls_make_function_call_items_with_argument_deltas() -> None:
    tools = [{"type": "function", "name": "f", "parameters": {"type": "object"}},
             {"type": "function", "name": "g", "parameters": None}]  # fmt: skip
    events = _run(_stream(tools=tools, tool_choice="required"), [
        _chunk({"role": "assistant", "content": ""}),
        _chunk({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                                "function": {"name": "f", "arguments": ""}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{\"x\":"}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": " 1}"}}]}),
        _chunk({"tool_calls": [{"index": 1, "id": "call_b", "type": "function",
                                "function": {"name": "g", "arguments": "{}"}}]},
               finish="tool_calls"),
    ])  # fmt: skip
    assert _types(events) == [
        "created", "in_progress",
        "output_item.added", "function_call_arguments.delta", "function_call_arguments.delta",
        "output_item.added", "function_call_arguments.delta",
        "function_call_arguments.done", "output_item.done",
        "function_call_arguments.done", "output_item.done", "completed",
    ]  # fmt: skip
    done = [e for e in events if e["type"] == "response.function_call_arguments.done"]
    assert [(e["name"], e["arguments"], e["output_index"]) for e in done] == [
        ("f", "{\"x\": 1}", 0), ("g", "{}", 1)]  # fmt: skip
    output = events[-1]["response"]["output"]
    assert [(o["type"], o["call_id"], o["status"]) for o in output] == [
        ("function_call", "call_a", "completed"),
        ("function_call", "call_b", "completed"),
    ]
    assert events[-1]["response"]["tool_choice"] == "required"


def test_an_answer_cut_at_its_token_limit_is_incomplete() -> None:
    events = _run(_stream(max_output_tokens=2), [
        _chunk({"reasoning_content": "hmm"}, finish="length"),
    ])  # fmt: skip
    final = events[-1]
    assert final["type"] == "response.incomplete"
    response = final["response"]
    assert response["status"] == "incomplete"
    assert response["completed_at"] is None
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert response["output"][0]["status"] == "incomplete"
    assert response["max_output_tokens"] == 2


def test_a_broken_upstream_ends_with_error_and_response_failed() -> None:
    stream = _stream()
    events = stream.start() + stream.feed(_chunk({"content": "par"}))
    events += stream.fail("The replica failed mid-answer.")
    _check(events)
    assert _types(events)[-5:] == [
        "output_text.done",
        "content_part.done",
        "output_item.done",
        "error",
        "failed",
    ]
    error, failed = events[-2:]
    assert (error["code"], error["message"]) == ("server_error", "The replica failed mid-answer.")
    assert failed["response"]["status"] == "failed"
    assert failed["response"]["error"] == {
        "code": "server_error",
        "message": "The replica failed mid-answer.",
    }
    assert failed["response"]["output"][0]["status"] == "incomplete"


def test_a_whole_answer_makes_the_same_response_as_its_stream() -> None:
    answer = {
        "id": "c", "object": "chat.completion", "created": 1, "model": "demo",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "logprobs": None, "message": {
            "role": "assistant", "content": "Calling.", "reasoning_content": "plan",
            "tool_calls": [{"id": "call_1", "type": "function",
                            "function": {"name": "f", "arguments": "{}"}}]}}],
        "usage": USAGE,
    }  # fmt: skip
    tools = [{"type": "function", "name": "f", "parameters": {"type": "object"}}]
    whole = response_from_answer(_stream(tools=tools), answer)
    assert_conforms("Response", whole)
    streamed = _run(_stream(tools=tools), [
        _chunk({"reasoning_content": "plan"}), _chunk({"content": "Calling."}),
        _chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                "function": {"name": "f", "arguments": "{}"}}]},
               finish="tool_calls"),
        {"choices": [], "usage": USAGE},
    ])[-1]["response"]  # fmt: skip
    assert whole == streamed
    assert [item["type"] for item in whole["output"]] == ["reasoning", "message", "function_call"]


def test_the_response_echoes_the_request_settings() -> None:
    stream = _stream(
        instructions="Be brief.", temperature=0.3, top_p=0.9, user="u1", metadata={"k": "v"},
        text={"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"},
                         "description": "d"}},
        tools=[{"type": "function", "name": "f", "description": "F.", "strict": False}],
        tool_choice={"type": "function", "name": "f"}, store=False,
    )  # fmt: skip
    response = _run(stream, [_chunk({"content": "{}"}, finish="stop")])[-1]["response"]
    assert response["instructions"] == "Be brief."
    assert (response["temperature"], response["top_p"], response["user"]) == (0.3, 0.9, "u1")
    assert response["metadata"] == {"k": "v"}
    assert response["store"] is False
    assert response["text"]["format"]["name"] == "x"
    assert response["tools"] == [{"type": "function", "name": "f", "description": "F.",
                                  "parameters": None, "strict": False}]  # fmt: skip
    assert response["tool_choice"] == {"type": "function", "name": "f"}


def test_usage_conversion_tolerates_missing_details() -> None:
    assert response_usage(None) is None
    assert response_usage({"prompt_tokens": 3, "completion_tokens": 1}) == {
        "input_tokens": 3, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": 1, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 4,
    }  # fmt: skip
