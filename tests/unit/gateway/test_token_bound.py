"""The admission reservation is an upper bound of what a request can use.

The property tests send seeded random requests — adversarial text (digits, rare scripts,
control characters), many prompts, token ids, many choices, tools, every number type — to
the real replica server (a scripted engine that always generates until its limit, so the
usage it reports is the most a request can use) and assert the gateway's bound is never
below that usage.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from fastapi import Request
from gateway_fakes import KEY, Gateway
from gateway_fakes import MODEL as GATEWAY_MODEL
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from aiforge.engines.core import GenerationRequest
from aiforge.gateway.request import DEFAULT_CONTEXT_TOKENS, TokenDemand, parse_request
from aiforge.platform.limits import LimitAdmission, LimitPolicy, MemoryStore
from aiforge.protocol.openai.errors import OpenAIError
from aiforge.testing.fake_engine import FakeTokenEngine, fake_replica
from aiforge.testing.models import qwen3_tokenizer_dir
from aiforge.types import RequestKind, Ticket

MODEL = "m"
CASES = 120
_JSON = {"content-type": "application/json"}


def bound(body: dict[str, Any], kind: RequestKind, max_model_len: int | None) -> int:
    return parse_request(orjson.dumps(body), kind).demand.bound(max_model_len)


# -- the reproductions of the issue, and the rules ------------------------------------------


def test_a_float_max_tokens_is_counted() -> None:
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    assert bound({**chat, "max_tokens": 2000.0}, "chat", None) > 2000
    assert bound({**chat, "max_completion_tokens": 2e3}, "chat", 40_960) > 2000
    # An integer beyond 64 bits is parsed as a float: still counted, capped by the context.
    huge = parse_request(b'{"model":"m","max_tokens":100000000000000000000000}', "chat")
    assert huge.demand.bound(4096) == 4096


def test_every_prompt_and_every_choice_is_counted() -> None:
    body = {"model": MODEL, "prompt": ["x"] * 100, "n": 100, "max_tokens": 1}
    assert bound(body, "completion", None) >= 100 * (100 + 1)
    ids = {"model": MODEL, "prompt": [[1, 2, 3]] * 10, "n": 2, "best_of": 5, "max_tokens": 7}
    assert bound(ids, "completion", 4096) == 10 * (3 + 5 * 7)
    flat = {"model": MODEL, "prompt": list(range(50)), "max_tokens": 1}
    assert bound(flat, "completion", 4096) >= 50 + 1


def test_text_that_normalization_expands_is_counted() -> None:
    # U+0F76 is 3 UTF-8 bytes; NFC makes it two characters, and Qwen3 six tokens.
    text = "\u0f76" * 100
    body = {"model": MODEL, "prompt": text, "max_tokens": 1}
    assert bound(body, "completion", None) >= 600 + 1
    chat = {"model": MODEL, "max_tokens": 1, "messages": [{"role": "user", "content": text}]}
    assert bound(chat, "chat", None) >= 600 + 1


def test_embeddings_count_every_input() -> None:
    body = {"model": MODEL, "input": ["a" * 100] * 20}
    assert bound(body, "embedding", None) >= 20 * 100
    assert bound({"model": MODEL, "input": [[7] * 300] * 4}, "embedding", 4096) == 1200
    assert bound({"model": MODEL, "input": [[7] * 300] * 4}, "embedding", 100) == 400


def test_without_max_tokens_the_context_is_reserved() -> None:
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    assert bound(chat, "chat", 40_960) == 40_960, "prompt and completion share the context"
    assert bound({**chat, "n": 3}, "chat", 40_960) == 3 * 40_960
    assert bound(chat, "chat", None) > DEFAULT_CONTEXT_TOKENS
    completion = {"model": MODEL, "prompt": ["a", "b"]}
    assert bound(completion, "completion", 1000) == 2 * 1000
    # 0 may mean "the engine's default" (vLLM reads `max_completion_tokens or max_tokens`).
    assert bound({**chat, "max_completion_tokens": 0}, "chat", 500) == 500


def test_prompts_the_bytes_cannot_bound_take_the_context() -> None:
    image = {"type": "image_url", "image_url": {"url": "http://x/i.png"}}
    media = {"model": MODEL, "max_tokens": 1,
             "messages": [{"role": "user", "content": [image]}]}  # fmt: skip
    assert bound(media, "chat", 8192) == 8192
    template = {"model": MODEL, "max_tokens": 1, "chat_template": "{% for i in range(9) %}",
                "messages": [{"role": "user", "content": "hi"}]}  # fmt: skip
    assert bound(template, "chat", 8192) == 8192


def test_content_parts_of_any_shape_take_the_context_never_a_500() -> None:
    """Found by the fuzz run: a part whose ``type`` was an object crashed the bound (500)."""
    for part in ({"type": {}}, {"type": ["text"]}, {"type": None}, {}, "text", 3):
        message = {"role": "user", "content": [part]}
        body = {"model": MODEL, "max_tokens": 1, "messages": [message]}
        assert bound(body, "chat", 8192) == 8192, part


def test_the_bound_never_exceeds_what_the_context_allows() -> None:
    demand = TokenDemand(prompts=(10**9, None, 5), choices=2, max_tokens=10**9)
    assert demand.bound(1000) == 3 * 2 * 1000
    assert TokenDemand(prompts=(), choices=1, max_tokens=1).bound(10) == 1


@pytest.mark.parametrize("param", ["max_tokens", "max_completion_tokens", "n", "best_of"])
@pytest.mark.parametrize(
    ("value", "says"),
    [
        (True, "a boolean"),
        ("2000", "a string"),
        (2.5, "a decimal number"),
        ([1], "an array"),
        ({"a": 1}, "an object"),
        (-1, "below minimum"),
    ],
)
def test_a_limit_of_the_wrong_type_is_a_400_naming_it(param: str, value: Any, says: str) -> None:
    body = orjson.dumps({"model": MODEL, "prompt": "x", param: value})
    with pytest.raises(OpenAIError) as refused:
        parse_request(body, "completion")
    assert (refused.value.status_code, refused.value.param) == (400, param)
    assert says in refused.value.message
    assert refused.value.code in {"invalid_type", "integer_below_min_value"}


def test_zero_choices_is_a_400() -> None:
    with pytest.raises(OpenAIError) as refused:
        parse_request(b'{"model":"m","prompt":"x","n":0}', "completion")
    assert refused.value.param == "n"


# -- the property: bound >= any usage the replica reports ----------------------------------

_ALPHABETS = (
    "0123456789",
    " \n\t\r",
    "abcdefghijklmnopqrstuvwxyz",
    '{}[]":,\\/<>|',
    "".join(chr(c) for c in range(0x4E00, 0x4E40)),  # CJK
    "".join(chr(c) for c in range(0x0600, 0x0620)),  # Arabic, incl. format characters
    "".join(chr(c) for c in range(0x1F600, 0x1F620)),  # emoji (4 UTF-8 bytes)
    "".join(chr(c) for c in range(0x10400, 0x10420)),  # Deseret: rare, split into bytes
    "".join(chr(c) for c in range(1, 32)),  # control characters
    "\u200b\u200d\u202e\ufeff",
    "\u0f73\u0f75\u0f76\u0f78\u0f81\u0f93\u0fb9\ufb2c\ufb2d\ufdfa",  # expand when normalized
)


def _text(rng: random.Random, longest: int = 120) -> str:
    size = rng.choice([0, 1, rng.randint(0, longest)])
    mix = rng.sample(_ALPHABETS, rng.randint(1, 3))
    alphabet = "".join(mix)
    if rng.random() < 0.1:
        return "<|im_start|>" * (size // 12)
    return "".join(rng.choice(alphabet) for _ in range(size))


def _number(rng: random.Random, value: int) -> int | float:
    return float(value) if rng.random() < 0.4 else value


def _limits(rng: random.Random, body: dict[str, Any], kind: str) -> None:
    if rng.random() < 0.75:
        name = "max_completion_tokens" if kind == "chat" and rng.random() < 0.4 else "max_tokens"
        body[name] = _number(rng, rng.randint(1, 64))
    n = rng.randint(1, 3)
    if n > 1 or rng.random() < 0.3:
        body["n"] = _number(rng, n)
    if kind == "completion" and rng.random() < 0.3:
        body["best_of"] = body.get("n", 1)


def _tool(rng: random.Random) -> dict[str, Any]:
    parameters = {
        "type": "object",
        "properties": {_text(rng, 8) or "p": {"type": "integer", "enum": list(range(30))}},
    }
    return {"type": "function",
            "function": {"name": "f" + str(rng.randint(0, 9)), "description": _text(rng, 30),
                         "parameters": parameters}}  # fmt: skip


def _chat(rng: random.Random) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    for _ in range(rng.randint(1, 6)):
        role = rng.choice(["system", "user", "assistant", "user"])
        content: Any = _text(rng)
        if rng.random() < 0.2:
            content = [{"type": "text", "text": _text(rng, 20)} for _ in range(rng.randint(1, 4))]
        message: dict[str, Any] = {"role": role, "content": content}
        if role == "assistant" and rng.random() < 0.3:
            arguments = orjson.dumps({"a": list(range(rng.randint(0, 20)))}).decode()
            call = {"name": "f", "arguments": arguments}
            message["tool_calls"] = [{"id": "c", "type": "function",
                                      "function": call}]  # fmt: skip
        messages.append(message)
    messages[-1]["role"] = "user"
    messages[-1].pop("tool_calls", None)
    body: dict[str, Any] = {"model": MODEL, "messages": messages}
    if rng.random() < 0.3:
        body["tools"] = [_tool(rng) for _ in range(rng.randint(1, 3))]
    _limits(rng, body, "chat")
    return body


def _raw_prompt(rng: random.Random) -> Any:
    shape = rng.randint(0, 3)
    if shape == 0:
        return _text(rng) or "x"
    if shape == 1:
        return [_text(rng, 60) or "x" for _ in range(rng.randint(1, 4))]
    if shape == 2:
        return [rng.randint(0, 150_000) for _ in range(rng.randint(1, 80))]
    return [[rng.randint(0, 150_000) for _ in range(rng.randint(1, 40))] for _ in range(3)]


def _completion(rng: random.Random) -> dict[str, Any]:
    body: dict[str, Any] = {"model": MODEL, "prompt": _raw_prompt(rng)}
    _limits(rng, body, "completion")
    return body


def _endless(request: GenerationRequest) -> list[int]:
    """Never stops by itself: every sequence runs to its token limit."""
    return [15] * (request.params.max_tokens + 1)


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(qwen3_tokenizer_dir())


@pytest.fixture
async def replica(
    tokenizer: PreTrainedTokenizerBase, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[httpx.AsyncClient, int]]:
    max_model_len, embedding_dim = request.param
    engine = FakeTokenEngine(
        script=_endless, max_model_len=max_model_len, embedding_dim=embedding_dim
    )
    async with fake_replica(engine, tokenizer, served_model_name=MODEL) as client:
        yield client, max_model_len


async def _check(
    client: httpx.AsyncClient, path: str, kind: RequestKind, body: dict[str, Any], context: int
) -> bool:
    """Send ``body`` to the replica; assert both bounds (context known, and not) hold."""
    raw = orjson.dumps(body)
    response = await client.post(path, content=raw, headers=_JSON)
    if response.status_code != 200:
        return False
    usage = response.json()["usage"]
    demand = parse_request(raw, kind).demand
    for published in (context, None):
        assert demand.bound(published) >= usage["total_tokens"], (published, usage, body)
    return True


@pytest.mark.parametrize("replica", [(768, None)], indirect=True)
async def test_chat_bound_covers_reported_usage(replica: tuple[httpx.AsyncClient, int]) -> None:
    client, context = replica
    rng = random.Random(7)
    served = [
        await _check(client, "/v1/chat/completions", "chat", _chat(rng), context)
        for _ in range(CASES)
    ]
    assert sum(served) > CASES // 2, "most cases must reach the engine to prove anything"


@pytest.mark.parametrize("replica", [(512, None)], indirect=True)
async def test_completion_bound_covers_reported_usage(
    replica: tuple[httpx.AsyncClient, int],
) -> None:
    client, context = replica
    rng = random.Random(11)
    served = [
        await _check(client, "/v1/completions", "completion", _completion(rng), context)
        for _ in range(CASES)
    ]
    assert sum(served) > CASES // 2


@pytest.mark.parametrize("replica", [(256, 8)], indirect=True)
async def test_embedding_bound_covers_reported_usage(
    replica: tuple[httpx.AsyncClient, int],
) -> None:
    client, context = replica
    rng = random.Random(13)
    served = [
        await _check(
            client, "/v1/embeddings", "embedding", {"model": MODEL, "input": _raw_prompt(rng)},
            context,
        )
        for _ in range(CASES)
    ]  # fmt: skip
    assert sum(served) > CASES // 2


# -- through the gateway: the reproductions refused before any replica -------------


def _limited(gateway: Gateway, key: LimitPolicy) -> LimitAdmission:
    limits = LimitAdmission(MemoryStore(), lambda _p: (key, LimitPolicy()))
    gateway.app.state.handler.admission = limits
    return limits


async def test_a_float_max_tokens_cannot_slip_a_per_minute_limit(gateway: Gateway) -> None:
    _limited(gateway, LimitPolicy(tokens_per_minute=1_000))
    body = {"model": GATEWAY_MODEL, "prompt": "hi", "max_tokens": 2000.0}
    async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers) as client:
        refused = await client.post("/v1/chat/completions", json=body)
    assert refused.status_code == 429
    assert refused.headers["x-ratelimit-limit-name"] == "key.tokens_per_minute"
    assert "max_tokens" in refused.json()["error"]["message"]
    assert gateway.replica_app.state.bodies == [], "nothing reached the replica"


async def test_many_prompts_and_choices_cannot_slip_a_daily_budget(gateway: Gateway) -> None:
    _limited(gateway, LimitPolicy(tokens_per_day=1_000))
    body = {"model": GATEWAY_MODEL, "prompt": ["x"] * 100, "n": 100, "max_tokens": 1}
    async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers) as client:
        refused = await client.post("/v1/completions", json=body)
    assert refused.status_code == 429
    assert refused.headers["x-ratelimit-limit-name"] == "key.tokens_per_day"


async def test_the_published_context_bounds_a_request_without_max_tokens(
    gateway: Gateway,
) -> None:
    gateway.fleet.deploy(GATEWAY_MODEL, max_model_len=2_048)
    body = {"model": GATEWAY_MODEL, "messages": [{"role": "user", "content": "hi"}], "n": 2}
    async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers) as client:
        answered = await client.post("/v1/chat/completions", json=body)
    assert answered.status_code == 200
    assert gateway.admission.admitted == [(GATEWAY_MODEL, 2 * 2_048)]


async def test_a_wrongly_typed_limit_is_a_400_envelope(gateway: Gateway) -> None:
    body = {"model": GATEWAY_MODEL, "prompt": "hi", "max_tokens": True}
    async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers) as client:
        refused = await client.post("/v1/chat/completions", json=body)
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert (error["param"], error["code"], error["type"]) == (
        "max_tokens", "invalid_type", "invalid_request_error")  # fmt: skip


async def test_an_abandoned_answer_keeps_its_reservation(gateway: Gateway) -> None:
    """A request cancelled while its replica works (a shutdown, a client gone) has no usage
    to report: refunding its reservation would let what the replica spends go uncounted."""
    limits = _limited(gateway, LimitPolicy(tokens_per_day=100_000))
    settled: list[tuple[int, int]] = []
    settle = limits.settle

    async def spy(ticket: Ticket, actual_tokens: int) -> None:
        settled.append((ticket.reserved_tokens, actual_tokens))
        await settle(ticket, actual_tokens)

    limits.settle = spy  # type: ignore[method-assign]
    body = orjson.dumps({"model": GATEWAY_MODEL, "prompt": "w " * 40, "delay_s": 0.05,
                         "max_tokens": 64})  # fmt: skip
    handling = asyncio.create_task(
        gateway.app.state.handler.handle(_request(body), "chat", "/v1/chat/completions")
    )
    for _ in range(500):
        if gateway.replica_app.state.bodies:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)  # the head has arrived; the body takes two seconds
    handling.cancel()
    with pytest.raises(asyncio.CancelledError):
        await handling
    ((reserved, charged),) = settled
    assert charged == reserved > 64
    (event,) = gateway.usage.events
    assert event.cancelled


def _request(body: bytes) -> Request:
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    headers = [(b"authorization", f"Bearer {KEY}".encode()),
               (b"content-type", b"application/json")]  # fmt: skip
    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions",
             "headers": headers, "query_string": b""}  # fmt: skip
    return Request(scope, receive)
