"""StreamMeter and request parsing: pure byte/JSON handling."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
import pytest

from aiforge.gateway.metering import (
    StreamMeter,
    TokenUsage,
    usage_from_body,
    without_usage_member,
)
from aiforge.gateway.request import (
    DEFAULT_CONTEXT_TOKENS,
    PROMPT_SPECIAL_TOKENS,
    parse_request,
)
from aiforge.protocol.openai.errors import OpenAIError


def _event(payload: Mapping[str, Any], sep: bytes = b"\n\n") -> bytes:
    return b"data: " + orjson.dumps(payload) + sep


def _usage(completion: int) -> dict[str, object]:
    return {"prompt_tokens": 4, "completion_tokens": completion, "total_tokens": 4 + completion,
            "prompt_tokens_details": {"cached_tokens": 1}}  # fmt: skip


def _stream(sep: bytes = b"\n\n", *, continuous: bool = True) -> bytes:
    """A replica's answer to include_usage (+ continuous_usage_stats): usage on every chunk."""
    role: dict[str, Any] = {
        "id": "c",
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}],
    }
    delta: dict[str, Any] = {"id": "c", "choices": [{"index": 0, "delta": {"content": "hi"},
                                     "finish_reason": None}]}  # fmt: skip
    events = [role, delta, delta]
    if continuous:
        events = [{**e, "usage": _usage(n)} for n, e in enumerate(events)]
    events.append({"id": "c", "choices": [], "usage": _usage(2)})
    return b"".join(_event(e, sep) for e in events) + b"data: [DONE]" + sep


def _run(meter: StreamMeter, raw: bytes, piece: int) -> bytes:
    out = b"".join(meter.feed(raw[i : i + piece]) for i in range(0, len(raw), piece))
    return out + meter.flush()


def _payloads(out: bytes, sep: bytes = b"\n\n") -> list[dict[str, object]]:
    events = [e.removeprefix(b"data: ") for e in out.split(sep) if e]
    return [orjson.loads(e) for e in events if e != b"[DONE]"]


@pytest.mark.parametrize("sep", [b"\n\n", b"\r\n\r\n"])
@pytest.mark.parametrize("piece", [1, 7, 1000])
def test_meter_strips_all_usage_when_client_asked_none(sep: bytes, piece: int) -> None:
    raw = _stream(sep)
    meter = StreamMeter(client_usage=False)
    out = _run(meter, raw, piece)
    assert b'"usage"' not in out
    assert out.endswith(b"data: [DONE]" + sep)
    payloads = _payloads(out, sep)
    assert len(payloads) == 3
    # Only the usage member went: every other byte is as the replica sent it.
    assert out == b"".join(_event(p, sep) for p in payloads) + b"data: [DONE]" + sep
    assert payloads == _payloads(_stream(sep, continuous=False), sep)[:3]
    assert meter.usage == TokenUsage(prompt_tokens=4, completion_tokens=2, cached_tokens=1)
    assert meter.first_content_at is not None


def test_meter_keeps_only_the_final_usage_chunk_for_include_usage() -> None:
    meter = StreamMeter(client_usage=True)
    out = _run(meter, _stream(), 5)
    assert out == _stream(continuous=False)
    assert meter.usage == TokenUsage(4, 2, 1)


def test_meter_passes_continuous_usage_through_untouched() -> None:
    raw = _stream()
    meter = StreamMeter(client_usage=True, client_continuous_usage=True)
    assert _run(meter, raw, 3) == raw
    assert meter.usage == TokenUsage(4, 2, 1)


@pytest.mark.parametrize("continuous_client", [False, True])
def test_cut_stream_is_metered_with_the_last_usage_forwarded(continuous_client: bool) -> None:
    raw = _stream()
    second_delta_end = raw.index(b"\n\n", raw.index(b'"completion_tokens":1')) + 2
    meter = StreamMeter(client_usage=continuous_client, client_continuous_usage=continuous_client)
    out = meter.feed(raw[: second_delta_end + 10])  # the client hangs up here
    assert out.count(b'"content":"hi"') == 1
    assert meter.usage == TokenUsage(4, 1, 1)


def test_usage_member_removal_handles_any_position_and_nesting() -> None:
    first = b'data: {"usage":{"a":1,"d":{"b":2}},"id":"x"}'
    middle = b'data: {"id":"x","usage": {"a":1},"model":"m"}'
    deep = b'data: {"id":"x","usage":{"d":{"e":{"f":1}}}}'
    assert without_usage_member(first) == b'data: {"id":"x"}'
    assert without_usage_member(middle) == b'data: {"id":"x","model":"m"}'
    assert without_usage_member(deep) == b'data: {"id":"x"}'
    assert without_usage_member(b"data: [DONE]") == b"data: [DONE]"


def test_meter_without_usage_counts_content_events_only() -> None:
    meter = StreamMeter(client_usage=False)
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


def test_parse_asks_for_usage_on_every_chunk_only_for_streams() -> None:
    plain = parse_request(b'{"model": "m", "max_tokens": 10, "n": 2}', "chat")
    assert plain.upstream_body == b'{"model": "m", "max_tokens": 10, "n": 2}'
    assert plain.demand.max_tokens == 10
    assert plain.demand.choices == 2
    assert plain.estimated_prompt_tokens == 10
    streamed = parse_request(b'{"model":"m","stream":true,"stream_options":{"x":1}}', "chat")
    assert orjson.loads(streamed.upstream_body)["stream_options"] == {
        "x": 1, "include_usage": True, "continuous_usage_stats": True}  # fmt: skip
    assert not streamed.client_wants_usage
    assert streamed.demand.max_tokens is None
    assert streamed.demand.bound(None) > DEFAULT_CONTEXT_TOKENS
    asked = b'{"model":"m","stream":true,"stream_options":{"include_usage":true}}'
    parsed = parse_request(asked, "completion")
    assert parsed.client_wants_usage
    assert not parsed.client_wants_continuous_usage
    assert orjson.loads(parsed.upstream_body)["stream_options"]["continuous_usage_stats"]
    everything = asked.replace(b"true}", b'true,"continuous_usage_stats":true}')
    both = parse_request(everything, "completion")
    assert both.client_wants_continuous_usage
    assert both.upstream_body == everything
    limit = parse_request(b'{"model":"m","max_completion_tokens":3,"max_tokens":9}', "chat")
    assert limit.demand.max_tokens == 9, "the larger: engines differ in which one wins"
    embedding = parse_request(b'{"model":"e","input":"x"}', "embedding")
    assert embedding.demand.choices == 0
    assert embedding.demand.bound(None) == 1 + PROMPT_SPECIAL_TOKENS


@pytest.mark.parametrize(
    ("body", "param"),
    [(b"[1]", None), (b"{", None), (b'{"model": 3}', "model"), (b"{}", "model"),
     (b'{"model": "m", "stream": "yes"}', "stream")],
)  # fmt: skip
def test_parse_rejects_malformed_bodies(body: bytes, param: str | None) -> None:
    with pytest.raises(OpenAIError) as info:
        parse_request(body, "chat")
    assert info.value.status_code == 400
    assert info.value.param == param
