"""The fuzz run's pure parts: how the schema is adapted, costs bounded, answers judged."""

from __future__ import annotations

from typing import Any

import orjson
from fuzz_support import (
    CAP_CEILING,
    COST_CAPS,
    bounded_costs,
    described_for_fuzzing,
    error_envelope_problem,
    stream_problem,
)

from aiforge.protocol.openai.errors import OpenAIError


def _spec() -> dict[str, Any]:
    body = {"$ref": "#/components/schemas/Chat"}
    return {
        "paths": {
            "/v1/chat": {
                "post": {"requestBody": {"content": {"application/json": {"schema": body}}}}
            },
            "/admin/v1/things": {
                "post": {"requestBody": {"content": {"application/json": {"schema": body}}}}
            },
        },
        "components": {
            "schemas": {
                "Chat": {"properties": {"model": {"type": "string"}, "n": {"type": "integer"}}}
            }
        },
    }


def test_v1_bodies_name_only_the_served_model_and_the_original_is_untouched() -> None:
    spec = _spec()
    described = described_for_fuzzing(spec, served_model="demo")
    chat = described["components"]["schemas"]["Chat"]
    assert chat["properties"]["model"] == {"type": "string", "enum": ["demo"]}
    assert chat["properties"]["n"] == {"type": "integer"}
    assert spec["components"]["schemas"]["Chat"]["properties"]["model"] == {"type": "string"}


def test_inline_v1_bodies_are_described_too() -> None:
    inline = {"properties": {"model": {"type": "string"}}}
    spec = {"paths": {"/v1/x": {"post": {"requestBody": {"content": {"application/json": {
        "schema": inline}}}}}}}  # fmt: skip
    described = described_for_fuzzing(spec, served_model="demo")
    schema = described["paths"]["/v1/x"]["post"]["requestBody"]["content"]["application/json"]
    assert schema["schema"]["properties"]["model"]["enum"] == ["demo"]


def test_plausible_costs_are_capped_and_validation_probes_are_kept() -> None:
    body = {"max_tokens": 5000, "n": 128, "best_of": True, "logprobs": 2, "seed": 10**30}
    assert bounded_costs(body) == {
        "max_tokens": COST_CAPS["max_tokens"],
        "n": COST_CAPS["n"],
        "best_of": True,  # not an int: left for validation to refuse
        "logprobs": 2,
        "seed": 10**30,
    }
    for probe in (CAP_CEILING, 2**63, -1, 0, 2.5e9):
        assert bounded_costs({"max_tokens": probe}) == {"max_tokens": probe}
    assert bounded_costs(["not", "a", "dict"]) == ["not", "a", "dict"]


def test_the_error_envelope_is_required_on_every_4xx() -> None:
    envelope = OpenAIError("bad", status_code=400).body()
    assert error_envelope_problem(400, "application/json", envelope) is None
    assert error_envelope_problem(200, "text/plain", b"fine") is None
    assert error_envelope_problem(500, "text/plain", b"oops") is None  # not_a_server_error's job
    assert "content-type" in str(error_envelope_problem(404, "text/plain", envelope))
    assert "not JSON" in str(error_envelope_problem(400, "application/json", b"Internal"))
    assert "'error'" in str(error_envelope_problem(422, "application/json", b'{"detail": []}'))
    empty = orjson.dumps({"error": {"message": "", "type": "x"}})
    assert "message" in str(error_envelope_problem(400, "application/json", empty))
    untyped = orjson.dumps({"error": {"message": "m", "type": None}})
    assert "type" in str(error_envelope_problem(400, "application/json", untyped))


def test_a_stream_must_end_with_done_and_carry_no_error() -> None:
    sse = "text/event-stream; charset=utf-8"
    chunk = b'data: {"choices": []}\n\n'
    assert stream_problem(200, sse, chunk + b"data: [DONE]\n\n") is None
    assert stream_problem(400, sse, b"") is None
    assert "[DONE]" in str(stream_problem(200, sse, chunk))
    assert "no data" in str(stream_problem(200, sse, b""))
    error = b"data: " + OpenAIError("upstream", status_code=502).body() + b"\n\n"
    assert "error event" in str(stream_problem(200, sse, chunk + error + b"data: [DONE]\n\n"))
    assert "not JSON" in str(stream_problem(200, sse, b"data: {oops\n\ndata: [DONE]\n\n"))


def test_a_responses_stream_must_end_completed_or_incomplete() -> None:
    sse = "text/event-stream"

    def stream(*kinds: str) -> bytes:
        return b"".join(
            b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind}) + b"\n\n"
            for kind in kinds
        )

    for ending in ("response.completed", "response.incomplete"):
        assert stream_problem(200, sse, stream("response.created", ending)) is None
    cut = stream_problem(200, sse, stream("response.created", "response.output_text.delta"))
    assert "output_text.delta" in str(cut)
    failed = stream_problem(200, sse, stream("response.created", "response.failed"))
    assert "response.failed" in str(failed)
    assert "error event" in str(stream_problem(200, sse, stream("response.created", "error")))
