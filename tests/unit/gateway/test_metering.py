"""StreamMeter and request parsing: pure byte/JSON handling."""

from __future__ import annotations

import orjson
import pytest

from aiforge.gateway.errors import GatewayError
from aiforge.gateway.metering import StreamMeter, TokenUsage, usage_from_body
from aiforge.gateway.request import DEFAULT_COMPLETION_ESTIMATE, parse_request


def _event(payload: dict[str, object], sep: bytes = b"\n\n") -> bytes:
    return b"data: " + orjson.dumps(payload) + sep


def _stream(sep: bytes = b"\n\n") -> bytes:
    delta = {"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}]}
    role = {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}
    usage = {"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 2,
                                      "prompt_tokens_details": {"cached_tokens": 1}}}  # fmt: skip
    return (_event(role, sep) + _event(delta, sep) + _event(delta, sep) + _event(usage, sep)
            + b"data: [DONE]" + sep)  # fmt: skip


@pytest.mark.parametrize("sep", [b"\n\n", b"\r\n\r\n"])
@pytest.mark.parametrize("piece", [1, 7, 1000])
def test_meter_strips_usage_chunk_across_any_split(sep: bytes, piece: int) -> None:
    raw = _stream(sep)
    meter = StreamMeter(strip_usage_chunk=True)
    out = b"".join(meter.feed(raw[i : i + piece]) for i in range(0, len(raw), piece))
    out += meter.flush()
    assert b'"usage"' not in out
    assert out.endswith(b"data: [DONE]" + sep)
    assert out.count(b"data: ") == 4
    assert meter.usage == TokenUsage(prompt_tokens=4, completion_tokens=2, cached_tokens=1)
    assert meter.content_events == 2
    assert meter.first_content_at is not None


def test_meter_keeps_usage_chunk_when_client_asked() -> None:
    raw = _stream()
    meter = StreamMeter(strip_usage_chunk=False)
    assert meter.feed(raw) + meter.flush() == raw
    assert meter.usage is not None
    assert meter.usage.total_tokens == 6


def test_meter_without_usage_counts_content_events_only() -> None:
    meter = StreamMeter(strip_usage_chunk=True)
    text = {"choices": [{"index": 0, "text": "a", "finish_reason": None}]}
    empty = {"choices": [{"index": 0, "text": "", "finish_reason": "length"}]}
    raw = _event(text) + _event(text) + _event(text) + _event(empty)
    assert meter.feed(raw[:-5]) != b""
    assert meter.feed(raw[-5:]) == raw[raw.rfind(b"data:") :]
    assert meter.usage is None
    assert meter.content_events == 3


def test_usage_from_body() -> None:
    body = orjson.dumps({"usage": {"prompt_tokens": 3, "completion_tokens": 5}})
    assert usage_from_body(body) == TokenUsage(3, 5, 0)
    assert usage_from_body(b"not json") is None
    assert usage_from_body(b'{"usage": null}') is None


def test_parse_adds_include_usage_only_for_streams() -> None:
    plain = parse_request(b'{"model": "m", "max_tokens": 10, "n": 2}', "chat")
    assert plain.upstream_body == b'{"model": "m", "max_tokens": 10, "n": 2}'
    assert plain.estimated_completion_tokens == 20
    assert plain.estimated_prompt_tokens == 10
    streamed = parse_request(b'{"model":"m","stream":true,"stream_options":{"x":1}}', "chat")
    assert orjson.loads(streamed.upstream_body)["stream_options"] == {"x": 1, "include_usage": True}
    assert not streamed.client_wants_usage
    assert streamed.estimated_completion_tokens == DEFAULT_COMPLETION_ESTIMATE
    asked = b'{"model":"m","stream":true,"stream_options":{"include_usage":true}}'
    parsed = parse_request(asked, "completion")
    assert parsed.client_wants_usage
    assert parsed.upstream_body == asked
    limit = parse_request(b'{"model":"m","max_completion_tokens":3,"max_tokens":9}', "chat")
    assert limit.estimated_completion_tokens == 3
    assert parse_request(b'{"model":"e","input":"x"}', "embedding").estimated_tokens == 7


@pytest.mark.parametrize(
    ("body", "param"),
    [(b"[1]", None), (b"{", None), (b'{"model": 3}', "model"), (b"{}", "model"),
     (b'{"model": "m", "stream": "yes"}', "stream")],
)  # fmt: skip
def test_parse_rejects_malformed_bodies(body: bytes, param: str | None) -> None:
    with pytest.raises(GatewayError) as info:
        parse_request(body, "chat")
    assert info.value.status == 400
    assert info.value.param == param
