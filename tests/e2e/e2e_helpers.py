"""Raw HTTP helpers for schema checks of exactly what went over the wire."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

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


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert_conforms("ErrorResponse", body)
    error: dict[str, Any] = body["error"]
    return error
