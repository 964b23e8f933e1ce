"""What the gateway reads from a request body, and nothing more.

The gateway reads only ``model``, ``stream``, ``stream_options`` and what bounds the tokens
a request can use (``max_tokens`` / ``max_completion_tokens``, ``n``, ``best_of``, the
prompts, inputs, messages and tools); every other field is the replica's business, and the
body is forwarded byte for byte. The one change the gateway makes is to ask a streamed request for
usage on every chunk (``stream_options: {include_usage: true, continuous_usage_stats:
true}``, vLLM's option, which aiforge's replica server implements too), so metering never
depends on the client and a cancelled stream is metered exactly; the gateway removes what
the client did not ask for (:class:`aiforge.gateway.metering.StreamMeter`).

Admission reserves an **upper bound** of the tokens the request can make a replica count
(:class:`TokenDemand`, settled with the real count afterwards), so no key can spend more
than its limits by under-declaring: every prompt (a completions ``prompt`` or an
``input`` may hold many, as text or token ids), every choice (``max(n, best_of)`` per
prompt), and per choice ``max_tokens`` / ``max_completion_tokens`` or, when the request
sets neither, the whole context (:meth:`TokenDemand.bound` takes the deployment's
``max_model_len``). A text prompt is bounded by its UTF-8 bytes after Unicode
normalization (a byte-level BPE token covers at least one byte; JSON escapes only shrink),
plus what a chat template adds; a
prompt the bytes cannot bound (images, a request's own chat template) is bounded by the
context. The numeric fields are read as replicas read them (``2000.0`` is 2000); a type or
value no replica should take (a boolean, a string, ``2.5``, a negative) is a 400 naming the
parameter.

``estimated_prompt_tokens`` is something else: a *likely* prompt count (``ceil(body bytes
/ 4)``) for a usage record when the replica reports none.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Container, Iterable
from dataclasses import dataclass
from typing import Any, Literal, TypeGuard

import orjson
from fastapi import Request
from starlette.requests import ClientDisconnect

from aiforge.protocol.openai.errors import OpenAIError
from aiforge.protocol.openai.reasoning import thinking_from_body
from aiforge.types import RequestKind

CHARS_PER_TOKEN = 4
DEFAULT_CONTEXT_TOKENS = 40_960
"""The context assumed for a deployment that does not publish its ``max_model_len`` (the
Qwen3 chat models'); a deployment with a longer one must state it to be bounded."""
CHAT_TEMPLATE_TOKENS = 512
"""What a chat template adds beyond the request's own text: role markers, the tool-calling
preamble, thinking tags, the generation prompt (Qwen3's adds at most ~110)."""
PROMPT_SPECIAL_TOKENS = 4
"""Special tokens a tokenizer may add to one raw prompt or input (BOS, EOS, a prefix space)."""
_METERED = {"include_usage": True, "continuous_usage_stats": True}
_UNSTREAMED: frozenset[RequestKind] = frozenset({"embedding", "rerank", "score"})
SCORE_TEMPLATE_TOKENS = 512
"""What a reranker's prompt adds to each scored pair beyond the request's texts: Qwen3-Reranker's
system turn, default instruction and markers (about 330 bytes, so at most that many tokens)."""


@dataclass(frozen=True, slots=True)
class TokenDemand:
    """The most tokens a request can make a replica count, short of the context length."""

    prompts: tuple[int | None, ...]
    """Per prompt, an upper bound of its tokens; None where only the context bounds it."""
    choices: int
    """Sequences generated per prompt (0 for embeddings)."""
    max_tokens: int | None
    """Per sequence; None when the request sets no limit (the context's remainder)."""

    def bound(self, max_model_len: int | None) -> int:
        """An upper bound of ``prompt_tokens + completion_tokens`` in the replica's usage.

        A prompt of ``p`` tokens with ``k`` choices uses ``p + k * c`` where ``p + c`` fits
        the context ``L``: at most ``min(p, L) + k * min(max_tokens, L)``, and at most
        ``k * L`` (for ``k >= 1``) whatever the prompt.
        """
        context = max_model_len or DEFAULT_CONTEXT_TOKENS
        per_choice = context if self.max_tokens is None else self.max_tokens
        if max_model_len is not None:
            per_choice = min(per_choice, max_model_len)
        total = 0
        for prompt in self.prompts:
            tokens = context if prompt is None else prompt
            if max_model_len is not None:
                tokens = min(tokens, max_model_len)
            usage = tokens + self.choices * per_choice
            if max_model_len is not None and self.choices:
                usage = min(usage, self.choices * max_model_len)
            total += usage
        return max(1, total)


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
    """A likely prompt count, for a usage record when the replica reports none."""
    demand: TokenDemand
    """What bounds the tokens it can use (admission reserves ``demand.bound(...)``)."""
    payload: dict[str, Any]
    """The parsed body (routing keys are read from it when a policy needs them)."""


def body_too_large(limit: int) -> OpenAIError:
    return OpenAIError(
        f"The request body is larger than the limit of {limit} bytes.",
        status_code=413,
        code="request_too_large",
    )


CLIENT_CLOSED = 499
"""The status of a request whose client went away before its answer (nginx's, as vLLM)."""


def client_closed() -> OpenAIError:
    """The client disconnected (mid-upload, or while waiting): nobody reads this answer; it
    is what the request is recorded as, cancelled, without a traceback."""
    return OpenAIError(
        "The client closed the connection before the answer.",
        status_code=CLIENT_CLOSED,
        code="client_closed_request",
    )


def check_content_type(content_type: str | None) -> None:
    """Refuse a body declared as something other than JSON (a form, text, multipart), as
    OpenAI does, instead of guessing; no declared type is read as JSON."""
    if content_type is None:
        return
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        return
    raise OpenAIError(
        f"The request's Content-Type is {media or 'empty'!r}; the OpenAI API takes a JSON "
        "body: send it with Content-Type: application/json.",
        status_code=400,
        code="invalid_content_type",
    )


def pick_headers(raw: Iterable[tuple[bytes, bytes]], names: Container[str]) -> dict[str, str]:
    """The headers named in ``names`` (lower case) from an ASGI scope's raw list, in one pass:
    the first value of each, decoded as latin-1 — what Starlette's ``Headers.get`` answers,
    without a scan of the list per name."""
    picked: dict[str, str] = {}
    for raw_name, raw_value in raw:
        name = raw_name.decode("latin-1")
        if name in names and name not in picked:
            picked[name] = raw_value.decode("latin-1")
    return picked


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refusing more than ``limit`` bytes (by Content-Length and while reading); a
    client that disconnects mid-upload is a 499 (:func:`client_closed`)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise body_too_large(limit)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise body_too_large(limit)
            chunks.append(chunk)
    except ClientDisconnect:
        raise client_closed() from None
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
    if not isinstance(stream, bool) or (stream and kind in _UNSTREAMED):
        raise OpenAIError(
            f"Invalid value for 'stream': {stream!r}.",
            status_code=400,
            param="stream",
            code="invalid_type",
        )
    if kind == "chat":  # every engine's replica reads these; a bad value is refused here
        thinking_from_body(data)
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
        demand=token_demand(data, kind, len(body), ascii_text=_plain_ascii(body)),
        payload=data,
    )


def _include_usage(options: Any) -> TypeGuard[dict[str, Any]]:
    return isinstance(options, dict) and options.get("include_usage") is True


def _plain_ascii(body: bytes) -> bool:
    """Every string in the JSON ``body`` is ASCII: no byte above 127 and no ``\\u`` escape
    (which could spell one); then normalization adds nothing anywhere in it."""
    return body.isascii() and b"\\u" not in body


def token_demand(
    data: dict[str, Any], kind: RequestKind, body_bytes: int, *, ascii_text: bool = False
) -> TokenDemand:
    """What bounds the request's tokens; raise a 400 for a limit field of the wrong type.
    ``ascii_text``: the caller knows every string in ``data`` is ASCII (skips looking)."""
    if kind == "embedding":
        return TokenDemand(_raw_prompts(data.get("input"), body_bytes), 0, None)
    if kind in ("rerank", "score"):
        return TokenDemand(_scored_pairs(data, kind, body_bytes), 0, None)
    limits = [_count(data, name, 0) for name in ("max_tokens", "max_completion_tokens")]
    # 0 or absent: some engines then fall back to their default (the whole context).
    max_tokens = max((v for v in limits if v), default=None)
    n, best_of = _count(data, "n", 1), _count(data, "best_of", 1)
    choices = max(n or 1, best_of or 1)
    if kind == "completion":
        prompts = _raw_prompts(data.get("prompt"), body_bytes)
        suffix = data.get("suffix")
        if isinstance(suffix, str) and suffix:
            extra = _text_bound(suffix)
            prompts = tuple(None if p is None else p + extra for p in prompts)
        return TokenDemand(prompts, choices, max_tokens)
    return TokenDemand((_chat_prompt(data, body_bytes, ascii_text),), choices, max_tokens)


def _count(data: dict[str, Any], name: str, minimum: int) -> int | None:
    """An integer field as a replica reads it (``2000.0`` is 2000); None when absent."""
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise OpenAIError(
            f"Invalid type for '{name}': expected an integer, but got {_json_type(value)} instead.",
            param=name,
            code="invalid_type",
        )
    if isinstance(value, float):
        if not value.is_integer():
            raise OpenAIError(
                f"Invalid type for '{name}': expected an integer, but got a decimal number "
                "instead.",
                param=name,
                code="invalid_type",
            )
        value = int(value)
    if value < minimum:
        raise OpenAIError(
            f"Invalid '{name}': integer below minimum value. Expected a value >= {minimum}, "
            f"but got {value} instead.",
            param=name,
            code="integer_below_min_value",
        )
    return value


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _raw_prompts(value: Any, body_bytes: int) -> tuple[int | None, ...]:
    """Bounds of a completions ``prompt`` / embeddings ``input``: a string, token ids, or a
    list of either. Each element of a list is taken as its own prompt, which also bounds
    a flat list of token ids (one prompt of ``len`` tokens, each element at least one)."""
    if isinstance(value, str):
        return (_text_bound(value),)
    if not isinstance(value, list):
        return (body_bytes + CHAT_TEMPLATE_TOKENS,)  # malformed: the replica refuses it
    return tuple(
        _text_bound(item) if isinstance(item, str)
        else len(item) if isinstance(item, list)
        else 1
        for item in value
    )  # fmt: skip


def _scored_pairs(data: dict[str, Any], kind: RequestKind, body_bytes: int) -> tuple[int, ...]:
    """Bounds of a rerank or score request's pairs: each pair is read as one prompt holding
    its query, its document, the instruction and the reranker's template (an embedding model
    reads less: each text once). A side that is not text falls back to the body's bytes."""
    if kind == "rerank":
        left: Any = data.get("query")
        right: Any = data.get("documents")
    else:
        left = data.get("text_1", data.get("queries"))
        right = data.get("text_2", data.get("documents"))
    lefts, rights = _side(left), _side(right)
    if len(lefts) == 1:
        lefts = lefts * len(rights)
    instruction = data.get("instruction")
    extra = SCORE_TEMPLATE_TOKENS + (
        _text_bound(instruction) if isinstance(instruction, str) else 0
    )
    if len(lefts) != len(rights):  # malformed: the replica refuses it
        return (body_bytes + extra,)
    return tuple(q + d + extra for q, d in zip(lefts, rights, strict=True))


def _side(value: Any) -> list[int]:
    """Per text of one side of the pairs (a string, a list of strings or ``{"text"}``); 0 for
    anything else, which the replica refuses without reading a token."""
    items = value if isinstance(value, list) else [value]
    bounds = []
    for item in items:
        text = item.get("text") if isinstance(item, dict) else item
        bounds.append(_text_bound(text) if isinstance(text, str) else 0)
    return bounds or [0]


def _text_bound(text: str) -> int:
    return _utf8_len(text) + _expansion(text) + PROMPT_SPECIAL_TOKENS


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _expansion(value: Any) -> int:
    """UTF-8 bytes that Unicode normalization (which tokenizers apply before splitting)
    adds to the strings in ``value``: composed characters such as U+0F76 decompose to
    twice their bytes, and Qwen3 makes one token of each byte."""
    extra, pending = 0, [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if not item.isascii():
                sizes = [
                    _utf8_len(unicodedata.normalize(form, item))
                    for form in _FORMS
                    if not unicodedata.is_normalized(form, item)
                ]
                extra += max(0, max(sizes, default=0) - _utf8_len(item))
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, dict):
            pending.extend(item.values())
    return extra


_FORMS: tuple[Literal["NFC", "NFKC"], ...] = ("NFC", "NFKC")


_TEXT_PARTS = frozenset({"text", "input_text", "output_text", "refusal"})


def _is_text_part(part: Any) -> bool:
    """A text content part; any other value (an image, a ``type`` that is not even a
    string) leaves the bound to the context and the refusal to validation."""
    kind = part.get("type") if isinstance(part, dict) else None
    return isinstance(kind, str) and kind in _TEXT_PARTS


def _chat_prompt(data: dict[str, Any], body_bytes: int, ascii_text: bool = False) -> int | None:
    """A chat prompt's bound: every byte of the body and what normalization adds to it, what
    the template adds, and once more the JSON it re-renders with spaces (tools, tool-call
    arguments). None (the context) when the request brings media or its own template."""
    if data.get("chat_template") is not None:
        return None
    rerendered = 0
    messages = data.get("messages")
    for message in messages if isinstance(messages, list) else ():
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, list) and any(not _is_text_part(part) for part in content):
            return None
        calls = message.get("tool_calls")
        if calls is not None:
            rerendered += len(orjson.dumps(calls))
    tools = data.get("tools")
    if tools is not None:
        rerendered += len(orjson.dumps(tools))
    expansion = 0 if ascii_text else _expansion(data)
    return body_bytes + expansion + rerendered + CHAT_TEMPLATE_TOKENS
