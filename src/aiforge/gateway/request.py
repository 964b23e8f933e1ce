"""What the gateway reads from a request body, and nothing more.

The gateway parses only ``model``, ``stream``, ``stream_options``, ``max_tokens`` /
``max_completion_tokens`` and ``n``; every other field is the replica's business and is
forwarded byte for byte. The one change the gateway makes is to ask a streamed request for
usage on every chunk (``stream_options: {include_usage: true, continuous_usage_stats:
true}``, vLLM's option, which aiforge's replica server implements too), so metering never
depends on the client and a cancelled stream is metered exactly; the gateway removes what
the client did not ask for (:class:`aiforge.gateway.metering.StreamMeter`).

Token estimate for admission (reserved before the replica is called, settled with the real
count afterwards): ``ceil(body bytes / 4)`` for the prompt — about four characters per
token, and the body's JSON overhead makes it an over- rather than an under-estimate — plus
``max_tokens × n`` for the completion (:data:`DEFAULT_COMPLETION_ESTIMATE` when the client
sets no limit).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeGuard

import orjson
from fastapi import Request

from aiforge.protocol.openai.errors import OpenAIError
from aiforge.types import RequestKind

CHARS_PER_TOKEN = 4
DEFAULT_COMPLETION_ESTIMATE = 256
_METERED = {"include_usage": True, "continuous_usage_stats": True}


@dataclass(frozen=True, slots=True)
class ProxiedRequest:
    """One OpenAI request as the gateway understands it."""

    kind: RequestKind
    model: str
    stream: bool
    client_wants_usage: bool
    """The client itself asked for the usage chunk (else the gateway strips it)."""
    client_wants_continuous_usage: bool
    """... and usage on every chunk (else the gateway removes it from all but the last)."""
    upstream_body: bytes
    """What goes to the replica: the client's bytes, or with the usage options added."""
    estimated_prompt_tokens: int
    estimated_completion_tokens: int
    payload: dict[str, Any]
    """The parsed body (routing keys are read from it when a policy needs them)."""

    @property
    def estimated_tokens(self) -> int:
        return self.estimated_prompt_tokens + self.estimated_completion_tokens


def body_too_large(limit: int) -> OpenAIError:
    return OpenAIError(
        f"The request body is larger than the limit of {limit} bytes.",
        status_code=413,
        code="request_too_large",
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refusing more than ``limit`` bytes (by Content-Length and while reading)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise body_too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise body_too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def parse_request(body: bytes, kind: RequestKind) -> ProxiedRequest:
    """Read the routing fields; raise a 400 :class:`OpenAIError` for a malformed body."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise OpenAIError(
            f"We could not parse the JSON body of your request ({exc}). The OpenAI API "
            "expects a JSON payload.",
            status_code=400,
            code="invalid_json",
        ) from None
    if not isinstance(data, dict):
        raise OpenAIError(
            "The request body must be a JSON object.", status_code=400, code="invalid_json"
        )
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise OpenAIError(
            "You must provide a model parameter (a string).",
            status_code=400,
            param="model",
            code="missing_required_parameter" if model is None else "invalid_type",
        )
    stream = data.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool) or (stream and kind == "embedding"):
        raise OpenAIError(
            f"Invalid value for 'stream': {stream!r}.",
            status_code=400,
            param="stream",
            code="invalid_type",
        )
    options = data.get("stream_options")
    client_wants_usage = stream and _include_usage(options)
    continuous = (
        client_wants_usage
        and isinstance(options, dict)
        and options.get("continuous_usage_stats") is True
    )
    upstream_body = body
    if stream and not continuous:
        data["stream_options"] = {**(options if isinstance(options, dict) else {}), **_METERED}
        upstream_body = orjson.dumps(data)
    return ProxiedRequest(
        kind=kind,
        model=model,
        stream=stream,
        client_wants_usage=client_wants_usage,
        client_wants_continuous_usage=continuous,
        upstream_body=upstream_body,
        estimated_prompt_tokens=-(-len(body) // CHARS_PER_TOKEN),
        estimated_completion_tokens=_completion_estimate(data, kind),
        payload=data,
    )


def _include_usage(options: Any) -> TypeGuard[dict[str, Any]]:
    return isinstance(options, dict) and options.get("include_usage") is True


def _completion_estimate(data: dict[str, Any], kind: RequestKind) -> int:
    if kind == "embedding":
        return 0
    limit = data.get("max_completion_tokens", data.get("max_tokens"))
    per_choice = limit if isinstance(limit, int) and limit > 0 else DEFAULT_COMPLETION_ESTIMATE
    n = data.get("n")
    choices = n if isinstance(n, int) and n > 0 else 1
    return per_choice * choices
