"""vLLM replicas name thinking ``reasoning``; the gateway gives clients ``reasoning_content``.

The chunks below have the shape vLLM 0.32 sends (pydantic ``model_dump_json``: compact
separators, ``reasoning`` in deltas and messages, usage on every chunk with
``continuous_usage_stats``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from gateway_fakes import Gateway

from aiforge.cli.serve import ServeOptions, _replica_identity
from aiforge.gateway.metering import StreamMeter, TokenUsage, with_reasoning_content
from aiforge.testing.server import free_port, running_app

VLLM_MODEL = "Qwen/Qwen3-0.6B"
_HEAD = b'{"id":"chatcmpl-a1","object":"chat.completion.chunk","created":1767225600,"model":"Qwen/Qwen3-0.6B","choices":[{"index":0,'  # noqa: E501


def _chunk(delta: bytes, completion: int, finish: bytes = b"null") -> bytes:
    usage = b'"usage":{"prompt_tokens":12,"total_tokens":%d,"completion_tokens":%d}' % (
        12 + completion,
        completion,
    )
    return (b"data: " + _HEAD + b'"delta":' + delta + b',"logprobs":null,"finish_reason":'
            + finish + b"}]," + usage + b"}\n\n")  # fmt: skip


VLLM_STREAM = b"".join(
    [
        _chunk(b'{"role":"assistant","content":""}', 0),
        _chunk(b'{"reasoning":"The user asks"}', 1),
        _chunk(b'{"reasoning":" \\"reasoning\\": 2+2."}', 2),
        _chunk(b'{"content":"4"}', 3),
        _chunk(b'{"content":""}', 3, b'"stop"'),
        b'data: {"id":"chatcmpl-a1","object":"chat.completion.chunk","created":1767225600,'
        b'"model":"Qwen/Qwen3-0.6B","choices":[],"usage":{"prompt_tokens":12,'
        b'"total_tokens":15,"completion_tokens":3}}\n\n',
        b"data: [DONE]\n\n",
    ]
)
VLLM_BODY = (
    b'{"id":"chatcmpl-b2","object":"chat.completion","created":1767225600,'
    b'"model":"Qwen/Qwen3-0.6B","choices":[{"index":0,"message":{"role":"assistant",'
    b'"content":"It is \\"4\\".","refusal":null,"annotations":null,"audio":null,'
    b'"function_call":null,"tool_calls":[],"reasoning":"Say \\"reasoning\\": 2+2=4."},'
    b'"logprobs":null,"finish_reason":"stop","stop_reason":null}],"service_tier":null,'
    b'"system_fingerprint":null,"usage":{"prompt_tokens":12,"total_tokens":30,'
    b'"completion_tokens":18,"prompt_tokens_details":null},"prompt_logprobs":null,'
    b'"kv_transfer_params":null}'
)


def _payloads(out: bytes) -> list[dict[str, object]]:
    events = [e.removeprefix(b"data: ") for e in out.split(b"\n\n") if e]
    return [orjson.loads(e) for e in events if e != b"[DONE]"]


def _deltas(out: bytes) -> list[dict[str, object]]:
    return [c["choices"][0]["delta"] for c in _payloads(out) if c["choices"]]  # type: ignore[index]


def test_body_rename_touches_only_the_key() -> None:
    renamed = with_reasoning_content(VLLM_BODY)
    assert renamed == VLLM_BODY.replace(b'"reasoning":"', b'"reasoning_content":"')
    message = orjson.loads(renamed)["choices"][0]["message"]
    assert message["reasoning_content"] == 'Say "reasoning": 2+2=4.'
    assert "reasoning" not in message
    assert message["content"] == 'It is "4".'


def test_rename_leaves_bytes_with_both_names_and_without_reasoning_alone() -> None:
    both = b'{"delta":{"reasoning":"a","reasoning_content":"a"}}'
    assert with_reasoning_content(both) is both
    plain = b'{"delta":{"content":"\\"reasoning\\": no"}}'
    assert with_reasoning_content(plain) is plain


@pytest.mark.parametrize("piece", [1, 9, 100_000])
def test_meter_renames_vllm_reasoning_and_counts_it_as_output(piece: int) -> None:
    meter = StreamMeter(client_usage=False, rename_reasoning=True)
    out = b"".join(
        meter.feed(VLLM_STREAM[i : i + piece]) for i in range(0, len(VLLM_STREAM), piece)
    )
    out += meter.flush()
    assert b'"reasoning":' not in out
    assert _deltas(out)[1:4] == [
        {"reasoning_content": "The user asks"},
        {"reasoning_content": ' "reasoning": 2+2.'},
        {"content": "4"},
    ]
    assert all("usage" not in p for p in _payloads(out))
    assert meter.usage == TokenUsage(prompt_tokens=12, completion_tokens=3)


def test_meter_times_first_output_at_the_first_reasoning_chunk() -> None:
    role, thinking = VLLM_STREAM.split(b"\n\n")[:2]
    for rename in (False, True):  # un-renamed (an engine not known to be vLLM) counts too
        meter = StreamMeter(client_usage=True, rename_reasoning=rename)
        meter.feed(role + b"\n\n")
        assert meter.first_content_at is None
        meter.feed(thinking + b"\n\n")
        assert meter.first_content_at is not None


def _vllm_replica() -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        if not orjson.loads(await request.body()).get("stream"):
            return Response(VLLM_BODY, media_type="application/json")

        async def events() -> AsyncIterator[bytes]:
            for event in VLLM_STREAM.split(b"\n\n")[:-1]:
                yield event + b"\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


@pytest.mark.parametrize("engine", ["vllm", "transformers"])
async def test_gateway_gives_reasoning_content_for_vllm_replicas(
    gateway: Gateway, engine: str
) -> None:
    async with running_app(_vllm_replica()) as url:
        dialect = "vllm" if engine == "vllm" else "openai"
        gateway.fleet.add(VLLM_MODEL, "v0", url, dialect=dialect)
        async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers) as client:
            body = {"model": VLLM_MODEL, "messages": [{"role": "user", "content": "2+2?"}]}
            answer = await client.post("/v1/chat/completions", json=body)
            streamed = await client.post("/v1/chat/completions", json={**body, "stream": True})
    key = "reasoning_content" if engine == "vllm" else "reasoning"
    assert answer.status_code == 200
    assert answer.json()["choices"][0]["message"][key] == 'Say "reasoning": 2+2=4.'
    assert _deltas(streamed.content)[1] == {key: "The user asks"}
    events = await gateway.usage.wait_for(2)
    assert [(e.prompt_tokens, e.completion_tokens) for e in events] == [(12, 18), (12, 3)]
    assert events[1].ttft_ms is not None


async def test_attached_replica_engine_is_read_from_owned_by() -> None:
    app = FastAPI()

    @app.get("/v1/models")
    async def models() -> dict[str, object]:
        return {"object": "list", "data": [{"id": VLLM_MODEL, "object": "model",
                                            "created": 1, "owned_by": "vllm"}]}  # fmt: skip

    options = ServeOptions()
    async with running_app(app) as url, httpx.AsyncClient() as client:
        assert await _replica_identity(client, url, options) == (VLLM_MODEL, "vllm")
        named = ServeOptions(served_model_name="qwen")
        assert await _replica_identity(client, url, named) == ("qwen", "vllm")
    down = ServeOptions(served_model_name="qwen", replica_engine="vllm")
    async with httpx.AsyncClient() as client:
        gone = f"http://127.0.0.1:{free_port()}"
        assert await _replica_identity(client, gone, down) == ("qwen", "vllm")
        assert await _replica_identity(client, gone, ServeOptions(served_model_name="q")) == (
            "q",
            "",
        )
