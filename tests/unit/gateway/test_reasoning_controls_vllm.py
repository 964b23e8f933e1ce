"""The reasoning controls on their way to a vLLM replica: checked at the gateway, then put in
the names vLLM 0.32 reads (``chat_template_kwargs.enable_thinking``,
``thinking_token_budget``); aiforge's own replicas get the body as the client sent it."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI, Request
from gateway_fakes import Gateway

from aiforge.gateway.dialects.vllm import conform_vllm_request
from aiforge.protocol.openai.reasoning import EFFORT_BUDGETS
from aiforge.testing.server import running_app

CHAT = "/v1/chat/completions"
MODEL = "Qwen/Qwen3-0.6B"
BASE: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "2+2?"}]}


def translated(**extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = orjson.loads(conform_vllm_request(CHAT, orjson.dumps({**BASE, **extra})))
    return out


def test_bodies_without_reasoning_controls_pass_byte_for_byte() -> None:
    body = orjson.dumps({**BASE, "chat_template_kwargs": {"x": 1}})
    assert conform_vllm_request(CHAT, body) is body
    budgeted = orjson.dumps({**BASE, "thinking_budget": 5})
    assert conform_vllm_request("/v1/completions", budgeted) is budgeted


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"thinking_budget": 64},
         {"chat_template_kwargs": {"enable_thinking": True}, "thinking_token_budget": 64}),
        ({"enable_thinking": False},
         {"chat_template_kwargs": {"enable_thinking": False}, "thinking_token_budget": 0}),
        ({"reasoning_effort": "low"},
         {"reasoning_effort": "low", "chat_template_kwargs": {"enable_thinking": True},
          "thinking_token_budget": EFFORT_BUDGETS["low"]}),
        ({"reasoning_effort": "high"},
         {"reasoning_effort": "high", "chat_template_kwargs": {"enable_thinking": True}}),
        ({"reasoning_effort": "none", "chat_template_kwargs": {"keep": 1}},
         {"reasoning_effort": "none", "thinking_token_budget": 0,
          "chat_template_kwargs": {"keep": 1, "enable_thinking": False}}),
        ({"enable_thinking": True, "thinking_budget": 0},
         {"chat_template_kwargs": {"enable_thinking": True}, "thinking_token_budget": 0}),
    ],
)  # fmt: skip
def test_controls_become_vllms_names(extra: dict[str, Any], expected: dict[str, Any]) -> None:
    assert translated(**extra) == {**BASE, **expected}


def test_an_invalid_body_is_left_for_the_replica_to_refuse() -> None:
    body = orjson.dumps({**BASE, "thinking_budget": -3})
    assert conform_vllm_request(CHAT, body) is body


def _recording_replica(seen: list[dict[str, Any]]) -> FastAPI:
    app = FastAPI()

    @app.post(CHAT)
    async def chat(request: Request) -> dict[str, Any]:
        seen.append(orjson.loads(await request.body()))
        return {
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": MODEL,
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": "4"}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4,
                      "completion_tokens_details": {"reasoning_tokens": 0}},
        }  # fmt: skip

    return app


@pytest.mark.parametrize("dialect", ["vllm", "openai"])
async def test_the_gateway_translates_for_vllm_replicas_only(
    gateway: Gateway, dialect: str
) -> None:
    seen: list[dict[str, Any]] = []
    async with running_app(_recording_replica(seen)) as url:
        gateway.fleet.add(MODEL, "v0", url, dialect=dialect)
        async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers) as client:
            answer = await client.post(CHAT, json={**BASE, "thinking_budget": 32})
    assert answer.status_code == 200
    assert answer.json()["usage"]["completion_tokens_details"] == {"reasoning_tokens": 0}
    if dialect == "vllm":
        assert seen[0]["thinking_token_budget"] == 32
        assert "thinking_budget" not in seen[0]
    else:
        assert seen[0]["thinking_budget"] == 32
        assert "thinking_token_budget" not in seen[0]


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"thinking_budget": -1}, "thinking_budget"),
        ({"reasoning_effort": "turbo"}, "reasoning_effort"),
        ({"enable_thinking": "no"}, "enable_thinking"),
    ],
)
async def test_the_gateway_refuses_invalid_controls_before_any_replica(
    gateway: Gateway, extra: dict[str, Any], param: str
) -> None:
    seen: list[dict[str, Any]] = []
    async with running_app(_recording_replica(seen)) as url:
        gateway.fleet.add(MODEL, "v0", url, dialect="vllm")
        async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers) as client:
            answer = await client.post(CHAT, json={**BASE, **extra})
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == param
    assert seen == []
