"""Every user error through the gateway: OpenAI's envelope, the right status and param."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
from conftest import MAX_BODY_BYTES, MAX_MODEL_LEN, MODEL_NAME
from e2e_helpers import auth, error_of, post_json

from aiforge.testing.server import RemoteAiforgeServer

MESSAGES: Any = [{"role": "user", "content": "hi"}]


def test_unknown_model_is_404(server: RemoteAiforgeServer) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        server.client().chat.completions.create(model="no-such-model", messages=MESSAGES)
    error = error_of(info.value.response)
    assert error["code"] == "model_not_found"
    assert error["param"] == "model"


def test_invalid_parameter_is_400_with_param(server: RemoteAiforgeServer) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        server.client().chat.completions.create(
            model=MODEL_NAME,
            messages=MESSAGES,
            temperature=7.0,
        )
    assert error_of(info.value.response)["param"] == "temperature"


def test_context_length_is_400_with_both_numbers(server: RemoteAiforgeServer) -> None:
    prompt = "hello " * (MAX_MODEL_LEN + 200)
    response = post_json(
        server,
        "/v1/chat/completions",
        {"model": MODEL_NAME, "max_tokens": 10, "messages": [{"role": "user", "content": prompt}]},
    )
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "context_length_exceeded"
    assert str(MAX_MODEL_LEN) in error["message"]
    requested = [int(w) for w in error["message"].replace(",", " ").split() if w.isdigit()]
    assert any(n > MAX_MODEL_LEN for n in requested), error["message"]


def test_body_over_limit_is_413(server: RemoteAiforgeServer) -> None:
    body = {"model": MODEL_NAME, "messages": [{"role": "user", "content": "x" * MAX_BODY_BYTES}]}
    response = post_json(server, "/v1/chat/completions", body)
    assert response.status_code == 413
    error_of(response)


def test_malformed_json_is_400(server: RemoteAiforgeServer) -> None:
    response = httpx.post(
        server.url_for("/v1/chat/completions"),
        content=b'{"model": "tiny",',
        headers={**auth(server), "content-type": "application/json"},
    )
    assert response.status_code == 400
    assert error_of(response)["type"] == "invalid_request_error"


def test_missing_or_wrong_key_is_401_when_keys_are_on(server: RemoteAiforgeServer) -> None:
    response = httpx.get(
        server.url_for("/v1/models"), headers={"authorization": "Bearer sk-not-a-key"}
    )
    if server.health().get("auth") == "off":
        pytest.skip("this server runs without the platform layer")
    assert response.status_code == 401
    error_of(response)
