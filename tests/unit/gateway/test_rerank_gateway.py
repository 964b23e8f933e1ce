"""``/v1/rerank`` and ``/v1/score`` through the gateway: proxied to a real replica server
(a scripted reranker engine and the real Qwen3 tokenizer), metered from the replica's
usage, bounded for admission, and described in the OpenAPI schema."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest
from gateway_fakes import KEY, PRINCIPAL, KeyAuth, RecordingAdmission, RecordingUsage
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from aiforge.config import Settings
from aiforge.engines.server.app import create_replica_app
from aiforge.engines.server.context import ReplicaContext
from aiforge.engines.server.metrics import ReplicaMetrics
from aiforge.gateway.app import create_app
from aiforge.gateway.request import parse_request
from aiforge.protocol.openai.errors import OpenAIError
from aiforge.testing.fake_engine import FakeTokenEngine, fake_replica, text_script
from aiforge.testing.fleet import StaticFleet
from aiforge.testing.models import qwen3_tokenizer_dir
from aiforge.testing.server import running_app
from aiforge.types import RequestKind

MODEL = "ranker"
RERANKER: dict[str, Any] = {"classifier_token_ids": (2152, 9693)}
HEADERS = {"authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(qwen3_tokenizer_dir())


@asynccontextmanager
async def _gateway(
    tokenizer: PreTrainedTokenizerBase, **engine: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, RecordingAdmission, RecordingUsage]]:
    fake = FakeTokenEngine(script=text_script(tokenizer, "x"), **engine)
    ctx = ReplicaContext(
        engine=fake,
        tokenizer=tokenizer,
        served_model_name=MODEL,
        max_model_len=fake.info.max_model_len,
        metrics=ReplicaMetrics(MODEL, fake.load),
    )
    async with running_app(create_replica_app(ctx)) as replica_url:
        fleet = StaticFleet()
        fleet.add(MODEL, "r0", replica_url)
        admission, usage = RecordingAdmission(), RecordingUsage()
        app = create_app(Settings(), directory=fleet.directory, fleet_status=fleet.status,
                         authenticator=KeyAuth({KEY: PRINCIPAL}),
                         admission=admission, usage_sink=usage)  # fmt: skip
        async with running_app(app) as url, httpx.AsyncClient(base_url=url) as client:
            yield client, admission, usage


async def test_rerank_is_proxied_metered_and_settled(tokenizer: PreTrainedTokenizerBase) -> None:
    async with _gateway(tokenizer, **RERANKER) as (client, admission, usage):
        response = await client.post(
            "/v1/rerank",
            json={"model": MODEL, "query": "q", "documents": ["a", "b"], "top_n": 1},
            headers=HEADERS,
        )
        score = await client.post(
            "/v1/score", json={"model": MODEL, "text_1": "q", "text_2": "a"}, headers=HEADERS
        )
        events = await usage.wait_for(2)
    assert response.status_code == 200, response.text
    assert len(response.json()["results"]) == 1
    tokens = response.json()["usage"]["prompt_tokens"]
    assert [(e.kind, e.status_code) for e in events] == [("rerank", 200), ("score", 200)]
    assert (events[0].prompt_tokens, events[0].completion_tokens) == (tokens, 0)
    assert events[1].prompt_tokens == score.json()["usage"]["prompt_tokens"]
    reserved = [n for _, n in admission.admitted]
    assert reserved[0] >= tokens
    assert [spent for _, spent in admission.settled] == [tokens, events[1].prompt_tokens]


async def test_a_chat_replica_refuses_rerank_through_the_gateway(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    async with _gateway(tokenizer) as (client, _, usage):
        response = await client.post(
            "/v1/rerank", json={"model": MODEL, "query": "q", "documents": ["a"]}, headers=HEADERS
        )
        events = await usage.wait_for(1)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "model_not_supported"
    assert events[0].status_code == 400


@pytest.mark.parametrize("kind", ["rerank", "score"])
def test_rerank_and_score_do_not_stream(kind: RequestKind) -> None:
    with pytest.raises(OpenAIError) as refused:
        parse_request(orjson.dumps({"model": MODEL, "stream": True}), kind)
    assert refused.value.param == "stream"


def _random_text(rng: random.Random) -> str:
    alphabet = "abc xyz 0123456789 é中文 \n\t!?{}<>\u0f76ﬁ"
    return "t" + "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))


def _random_request(rng: random.Random) -> tuple[str, RequestKind, dict[str, Any]]:
    documents: list[Any] = [_random_text(rng) + "d" for _ in range(rng.randint(1, 6))]
    instruction = rng.choice([None, _random_text(rng)])
    body: dict[str, Any]
    if rng.random() < 0.5:
        documents = [d if rng.random() < 0.5 else {"text": d} for d in documents]
        body = {"query": _random_text(rng), "documents": documents, "instruction": instruction}
        return "/v1/rerank", "rerank", body
    left: Any = _random_text(rng) if rng.random() < 0.5 else [_random_text(rng) for _ in documents]
    names = rng.choice([("text_1", "text_2"), ("queries", "documents")])
    body = {names[0]: left, names[1]: documents, "instruction": instruction}
    return "/v1/score", "score", body


@pytest.mark.parametrize("engine", [RERANKER, {"embedding_dim": 8}], ids=["reranker", "embed"])
async def test_the_admission_bound_covers_what_the_replica_counts(
    tokenizer: PreTrainedTokenizerBase, engine: dict[str, Any]
) -> None:
    rng = random.Random(7)
    fake = FakeTokenEngine(script=text_script(tokenizer, "x"), **engine)
    async with fake_replica(fake, tokenizer, served_model_name=MODEL) as replica:
        for _ in range(60):
            path, kind, body = _random_request(rng)
            payload = {"model": MODEL, **body}
            answer = await replica.post(path, json=payload)
            assert answer.status_code == 200, answer.text
            counted = answer.json()["usage"]["prompt_tokens"]
            bound = parse_request(orjson.dumps(payload), kind).demand.bound(None)
            assert bound >= counted, (payload, bound, counted)


def test_the_routes_are_in_the_openapi_schema() -> None:
    fleet = StaticFleet()
    app = create_app(Settings(), directory=fleet.directory, authenticator=KeyAuth({}),
                     admission=RecordingAdmission(), usage_sink=RecordingUsage())  # fmt: skip
    schema = app.openapi()
    for path, model in (("/v1/rerank", "RerankRequest"), ("/v1/score", "ScoreRequest")):
        body = schema["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        assert body["schema"]["$ref"].endswith(model)
        assert model in schema["components"]["schemas"]
