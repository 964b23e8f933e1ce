"""``/v1/rerank`` and ``/v1/score`` on the replica server, over the fake engine: ordering,
``top_n``, documents returned or not, pairing, errors, and which models serve what."""

from __future__ import annotations

from typing import Any

import pytest

from aiforge.testing.openai_schema import assert_conforms

MODEL = "qwen3-test"
RERANKER = {"classifier_token_ids": (2152, 9693)}
DOCS = ["alpha", {"text": "beta"}, "gamma", "delta"]


async def test_rerank_sorts_best_first_and_cuts_to_top_n(replica: Any) -> None:
    async with replica(**RERANKER) as (client, _):
        everything = await client.post(
            "/v1/rerank", json={"model": MODEL, "query": "q", "documents": DOCS}
        )
        top = await client.post(
            "/rerank",
            json={"model": MODEL, "query": "q", "documents": DOCS, "top_n": 2,
                  "return_documents": False},
        )  # fmt: skip
        scored = await client.post(
            "/v1/score",
            json={"model": MODEL, "text_1": "q", "text_2": ["alpha", "beta", "gamma", "delta"]},
        )
    assert everything.status_code == 200, everything.text
    results = everything.json()["results"]
    scores = [r["relevance_score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    assert sorted(r["index"] for r in results) == [0, 1, 2, 3]
    texts = ["alpha", "beta", "gamma", "delta"]
    assert all(r["document"] == {"text": texts[r["index"]]} for r in results)
    assert [r["index"] for r in top.json()["results"]] == [r["index"] for r in results[:2]]
    assert all("document" not in r for r in top.json()["results"])
    by_index = {d["index"]: d["score"] for d in scored.json()["data"]}
    assert {r["index"]: r["relevance_score"] for r in results} == by_index
    usage = everything.json()["usage"]
    assert usage["prompt_tokens"] == usage["total_tokens"] > 4 * 30  # the template is counted


async def test_score_pairs_one_to_one_and_one_to_many(replica: Any) -> None:
    async with replica(**RERANKER) as (client, _):
        pairs = await client.post(
            "/v1/score",
            json={"model": MODEL, "queries": ["a", "b"], "documents": ["c", "d"]},
        )
        broadcast = await client.post(
            "/v1/score", json={"model": MODEL, "text_1": "a", "text_2": "c"}
        )
    assert pairs.status_code == 200, pairs.text
    body = pairs.json()
    assert body["object"] == "list"
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert broadcast.json()["data"][0]["score"] == body["data"][0]["score"]
    assert broadcast.json()["id"].startswith("score-")


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/rerank", {"query": "q", "documents": []}, "documents"),
        ("/v1/rerank", {"query": "q", "documents": ["d"] * 1001}, "documents"),
        ("/v1/rerank", {"query": "q", "documents": ["d"], "top_n": -1}, "top_n"),
        ("/v1/rerank", {"query": "q", "documents": [{"content": []}]}, "documents[0]"),
        ("/v1/rerank", {"documents": ["d"]}, "query"),
        ("/v1/score", {"text_1": ["a", "b"], "text_2": ["c", "d", "e"]}, "text_1"),
        ("/v1/score", {"queries": "a", "documents": []}, "documents"),
        ("/v1/score", {"text_1": "a"}, None),
    ],
)
async def test_bad_input_is_a_400_envelope(
    replica: Any, path: str, body: dict[str, Any], param: str | None
) -> None:
    async with replica(**RERANKER) as (client, _):
        response = await client.post(path, json={"model": MODEL, **body})
    assert response.status_code == 400, response.text
    assert_conforms("ErrorResponse", response.json())
    if param is not None:
        assert response.json()["error"]["param"].startswith(param)


async def test_a_pair_longer_than_the_context_is_refused(replica: Any) -> None:
    async with replica(max_model_len=128, **RERANKER) as (client, _):
        response = await client.post(
            "/v1/rerank", json={"model": MODEL, "query": "q", "documents": ["ok", "long " * 80]}
        )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "context_length_exceeded"
    assert "pair 1" in response.json()["error"]["message"]


async def test_a_chat_model_refuses_rerank_and_score_naming_what_to_use(replica: Any) -> None:
    async with replica() as (client, _):
        rerank = await client.post(
            "/v1/rerank", json={"model": MODEL, "query": "q", "documents": ["d"]}
        )
        score = await client.post("/score", json={"model": MODEL, "text_1": "a", "text_2": "b"})
        embed = await client.post("/v1/embeddings", json={"model": MODEL, "input": "x"})
    for response in (rerank, score, embed):
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "model_not_supported"
    assert "demo-reranker" in rerank.json()["error"]["message"]
    assert "demo-embedding" in embed.json()["error"]["message"]


async def test_a_reranker_refuses_generation(replica: Any) -> None:
    async with replica(**RERANKER) as (client, engine):
        chat = await client.post(
            "/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
        )
        completion = await client.post("/v1/completions", json={"model": MODEL, "prompt": "hi"})
    for response in (chat, completion):
        assert response.status_code == 400
        assert response.json()["error"]["param"] == "model"
        assert "reranker" in response.json()["error"]["message"]
    assert engine.requests == []


async def test_an_embedding_model_scores_by_cosine_and_refuses_chat(replica: Any) -> None:
    async with replica(embedding_dim=16) as (client, _):
        same = await client.post(
            "/v1/score", json={"model": MODEL, "text_1": "hello", "text_2": ["hello", "bye"]}
        )
        chat = await client.post(
            "/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
        )
    scores = [d["score"] for d in same.json()["data"]]
    assert scores[0] == pytest.approx(1.0)
    assert scores[1] < 0.99
    assert same.json()["usage"]["prompt_tokens"] == 2  # each distinct text once
    assert chat.status_code == 400
    assert "/v1/embeddings" in chat.json()["error"]["message"]


async def test_an_empty_text_for_an_embedding_model_names_its_side(replica: Any) -> None:
    async with replica(embedding_dim=16) as (client, _):
        query = await client.post(
            "/v1/rerank", json={"model": MODEL, "query": "", "documents": ["a"]}
        )
        document = await client.post(
            "/v1/score", json={"model": MODEL, "queries": "a", "documents": ["b", ""]}
        )
    assert (query.status_code, query.json()["error"]["param"]) == (400, "query")
    assert (document.status_code, document.json()["error"]["param"]) == (400, "documents")


@pytest.mark.parametrize(
    ("engine", "task"),
    [({}, "chat"), ({"embedding_dim": 8}, "embedding"), (RERANKER, "rerank")],
)
async def test_the_model_card_says_what_the_model_serves(
    replica: Any, engine: dict[str, Any], task: str
) -> None:
    async with replica(**engine) as (client, _):
        card = (await client.get("/v1/models")).json()["data"][0]
    assert card["task"] == task
