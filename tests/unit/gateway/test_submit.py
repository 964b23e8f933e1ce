"""``OpenAIHandler.submit``: a request made inside the gateway on a caller's behalf takes the
same path as a client's — admission, routing, metering once under its own request id."""

from __future__ import annotations

import orjson
import pytest
from gateway_fakes import MODEL, PRINCIPAL, Gateway

from aiforge.gateway.handler import InternalRequest, OpenAIHandler
from aiforge.gateway.relay import RelayResponse
from aiforge.protocol.openai.errors import OpenAIError


def _handler(gateway: Gateway) -> OpenAIHandler:
    handler: OpenAIHandler = gateway.app.state.handler
    return handler


def _chat(request_id: str, **fields: object) -> InternalRequest:
    body = orjson.dumps({"model": MODEL, "prompt": "a b c", "max_tokens": 5, **fields})
    return InternalRequest(
        principal=PRINCIPAL,
        kind="chat",
        path="/v1/chat/completions",
        body=body,
        request_id=request_id,
    )


async def test_a_submitted_request_is_answered_and_metered_under_its_id(gateway: Gateway) -> None:
    response = await _handler(gateway).submit(_chat("batch-1-line-0"))
    assert response.status_code == 200
    assert orjson.loads(response.body)["choices"][0]["message"]["content"] == "a b c"
    (event,) = gateway.usage.events
    assert (event.request_id, event.key_id, event.completion_tokens) == ("batch-1-line-0", "k1", 3)
    assert len(gateway.admission.admitted) == 1


async def test_a_submitted_stream_is_read_inside_the_gateway(gateway: Gateway) -> None:
    response = await _handler(gateway).submit(_chat("r-stream", stream=True))
    assert isinstance(response, RelayResponse)
    raw = b""
    async for chunk in response.body_iterator:
        raw += chunk if isinstance(chunk, bytes) else str(chunk).encode()
    await response.aclose()
    assert raw.rstrip().endswith(b"data: [DONE]")
    (event,) = await gateway.usage.wait_for(1)
    assert (event.request_id, event.stream, event.cancelled) == ("r-stream", True, False)


async def test_a_stream_closed_unread_is_still_metered_once(gateway: Gateway) -> None:
    response = await _handler(gateway).submit(_chat("r-unread", stream=True))
    assert isinstance(response, RelayResponse)
    await response.aclose()
    await response.aclose()
    (event,) = await gateway.usage.wait_for(1)
    assert (event.request_id, event.cancelled) == ("r-unread", True)


async def test_a_submitted_request_for_an_unknown_model_is_refused_and_recorded(
    gateway: Gateway,
) -> None:
    request = _chat("r-unknown", model="nope")
    with pytest.raises(OpenAIError) as refused:
        await _handler(gateway).submit(request)
    assert refused.value.status_code == 404
    (event,) = gateway.usage.events
    assert (event.request_id, event.status_code) == ("r-unknown", 404)
