"""Raw HTTP helpers for schema checks of exactly what went over the wire."""

from __future__ import annotations

import functools
from typing import Any, Protocol

import httpx
import orjson

from aiforge.testing.models import qwen3_tokenizer_dir
from aiforge.testing.openai_schema import assert_conforms
from aiforge.testing.server import RemoteAiforgeServer


def auth(server: RemoteAiforgeServer) -> dict[str, str]:
    return {"authorization": f"Bearer {server.api_key}"}


def post_json(server: RemoteAiforgeServer, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(server.url_for(path), json=body, headers=auth(server), timeout=120.0)


def stream_chunks(server: RemoteAiforgeServer, path: str, body: dict[str, Any]) -> list[Any]:
    """POST a streamed request; every ``data:`` payload parsed (``[DONE]`` must end it)."""
    with httpx.stream(
        "POST",
        server.url_for(path),
        json={**body, "stream": True},
        headers=auth(server),
        timeout=120.0,
    ) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        payloads = [
            line.removeprefix("data:").strip()
            for line in response.iter_lines()
            if line.startswith("data:")
        ]
    assert payloads[-1] == "[DONE]"
    return [orjson.loads(p) for p in payloads[:-1]]


def chat_chunks(server: RemoteAiforgeServer, body: dict[str, Any]) -> list[Any]:
    chunks = stream_chunks(server, "/v1/chat/completions", body)
    for chunk in chunks:
        assert_conforms("CreateChatCompletionStreamResponse", chunk)
    return chunks


class JsonBody(Protocol):
    def json(self) -> Any: ...


def error_of(response: JsonBody) -> dict[str, Any]:
    body = response.json()
    assert_conforms("ErrorResponse", body)
    error: dict[str, Any] = body["error"]
    return error


@functools.lru_cache(maxsize=1)
def _whitespace_ban() -> dict[str, int]:
    """``logit_bias`` banning every token of the Qwen3 tokenizer that decodes to whitespace."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(qwen3_tokenizer_dir())
    texts = {token: str(tokenizer.decode([token])) for token in range(len(tokenizer))}
    return {str(token): -100 for token, text in texts.items() if text and not text.strip()}


def constrained_extras(server: RemoteAiforgeServer) -> dict[str, Any]:
    """Extra body fields for a request whose output is constrained (tools, JSON schema).

    vLLM's grammars allow any amount of whitespace between JSON tokens, and a random-weight
    model spends its whole budget there, never closing the value. For vLLM the whitespace-only
    tokens are banned and decoding is greedy, which leaves the grammar alone deciding what
    comes next. aiforge's own replica server needs neither: its grammars allow no free
    whitespace (``any_whitespace=False``, ``max_whitespace_cnt=1``), so its requests keep
    sampling under the grammar alone (``logit_bias`` itself is covered by unit tests).
    """
    if server.engine != "vllm":
        return {}
    return {"logit_bias": _whitespace_ban(), "temperature": 0}
