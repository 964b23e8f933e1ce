"""Rerank, score and embeddings through ``aiforge serve`` on the offline demo models.

``demo-reranker`` and ``demo-embedding`` are built from nothing in a fresh cache (no
network), served by real ``aiforge serve`` processes and driven with the official
``openai`` client: ``client.post`` for ``/rerank`` and ``/score`` (no OpenAI method exists
for them), ``client.embeddings.create`` for embeddings. Usage is checked in the gateway's
own records (``/v1/usage``) so metering is seen end to end.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from e2e_helpers import auth, post_json

from aiforge.testing.openai_schema import assert_conforms
from aiforge.testing.server import RemoteAiforgeServer

QUERY = "What is the weather in Paris?"
DOCUMENTS = ["the weather in Paris", "a JSON object", "numbers like 3.14 and 42"]


def _serve(name: str, tmp: pytest.TempPathFactory) -> Iterator[RemoteAiforgeServer]:
    root = tmp.mktemp(f"e2e-{name}")
    env = {"AIFORGE_CACHE_DIR": str(root / "cache")}  # built here, from nothing
    with RemoteAiforgeServer(name, engine="auto", env=env, data_dir=root / "data") as remote:
        yield remote


@pytest.fixture(scope="module")
def reranker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RemoteAiforgeServer]:
    yield from _serve("demo-reranker", tmp_path_factory)


@pytest.fixture(scope="module")
def embedder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RemoteAiforgeServer]:
    yield from _serve("demo-embedding", tmp_path_factory)


def _post(client: openai.OpenAI, path: str, body: dict[str, Any]) -> dict[str, Any]:
    answer: dict[str, Any] = client.post(path, body=body, cast_to=httpx.Response).json()
    return answer


def test_rerank_ranks_every_document_best_first(reranker: RemoteAiforgeServer) -> None:
    client = reranker.client()
    answer = _post(
        client, "/rerank", {"model": "demo-reranker", "query": QUERY, "documents": DOCUMENTS}
    )
    results = answer["results"]
    assert sorted(r["index"] for r in results) == [0, 1, 2]
    scores = [r["relevance_score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert [r["document"]["text"] for r in results] == [DOCUMENTS[r["index"]] for r in results]
    assert answer["model"] == "demo-reranker"
    assert answer["usage"]["prompt_tokens"] == answer["usage"]["total_tokens"] > 0

    top = _post(
        client,
        "/rerank",
        {"model": "demo-reranker", "query": QUERY, "documents": DOCUMENTS, "top_n": 1,
         "return_documents": False},
    )  # fmt: skip
    assert [r["index"] for r in top["results"]] == [results[0]["index"]]
    assert "document" not in top["results"][0]


def test_score_on_the_reranker_matches_its_rerank(reranker: RemoteAiforgeServer) -> None:
    client = reranker.client()
    scored = _post(
        client, "/score", {"model": "demo-reranker", "text_1": QUERY, "text_2": DOCUMENTS}
    )
    ranked = _post(
        client, "/rerank", {"model": "demo-reranker", "query": QUERY, "documents": DOCUMENTS}
    )
    by_index = {r["index"]: r["relevance_score"] for r in ranked["results"]}
    assert [d["index"] for d in scored["data"]] == [0, 1, 2]
    for item in scored["data"]:
        assert item["object"] == "score"
        assert math.isclose(item["score"], by_index[item["index"]], rel_tol=1e-4)
    assert scored["usage"]["prompt_tokens"] == ranked["usage"]["prompt_tokens"]


def _metered_prompt_tokens(server: RemoteAiforgeServer, model: str) -> tuple[int, int]:
    """(requests, prompt tokens) the gateway's usage ledger holds for ``model``."""
    report = httpx.get(
        server.url_for("admin", "v1", "usage"),
        headers=auth(server),
        params={"group_by": "model", "model": model},
        timeout=30.0,
    )
    assert report.status_code == 200, report.text
    rows = [row for row in report.json()["data"] if row["group"] == model]
    return (rows[0]["requests"], rows[0]["prompt_tokens"]) if rows else (0, 0)


def _settled(server: RemoteAiforgeServer, model: str) -> tuple[int, int]:
    """The ledger's numbers once earlier requests have all reached it (it is written in
    batches): the same twice, two seconds apart."""
    seen = _metered_prompt_tokens(server, model)
    while True:
        time.sleep(2.0)
        again = _metered_prompt_tokens(server, model)
        if again == seen:
            return seen
        seen = again


def test_rerank_usage_is_metered(reranker: RemoteAiforgeServer) -> None:
    before = _settled(reranker, "demo-reranker")
    answer = _post(
        reranker.client(),
        "/rerank",
        {"model": "demo-reranker", "query": "metered", "documents": ["one", "two"]},
    )
    expected = (before[0] + 1, before[1] + answer["usage"]["prompt_tokens"])
    deadline = time.monotonic() + 30.0
    while (seen := _metered_prompt_tokens(reranker, "demo-reranker")) != expected:
        assert time.monotonic() < deadline, (seen, expected)
        time.sleep(0.5)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"query": QUERY, "documents": []}, "documents"),
        ({"query": QUERY, "documents": DOCUMENTS, "top_n": -1}, "top_n"),
        ({"query": QUERY, "documents": ["d"] * 1001}, "documents"),
        ({"query": QUERY, "documents": DOCUMENTS, "stream": True}, "stream"),
        ({"documents": DOCUMENTS}, "query"),
    ],
)
def test_bad_rerank_input_is_a_400_envelope(
    reranker: RemoteAiforgeServer, body: dict[str, Any], param: str
) -> None:
    response = post_json(reranker, "/v1/rerank", {"model": "demo-reranker", **body})
    assert response.status_code == 400, response.text
    assert_conforms("ErrorResponse", response.json())
    assert response.json()["error"]["param"] == param
    with pytest.raises(openai.BadRequestError):
        reranker.client().post(
            "/rerank", body={"model": "demo-reranker", **body}, cast_to=httpx.Response
        )


def test_chat_to_the_reranker_is_a_clear_400(reranker: RemoteAiforgeServer) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        reranker.client().chat.completions.create(
            model="demo-reranker", messages=[{"role": "user", "content": "hi"}]
        )
    assert "reranker" in refused.value.message
    assert "/v1/rerank" in refused.value.message


def test_embeddings_and_score_on_the_embedding_demo(embedder: RemoteAiforgeServer) -> None:
    raw = post_json(embedder, "/v1/embeddings", {"model": "demo-embedding", "input": DOCUMENTS})
    assert raw.status_code == 200
    assert_conforms("CreateEmbeddingResponse", raw.json())
    client = embedder.client()
    vectors = [d.embedding for d in client.embeddings.create(
        model="demo-embedding", input=[QUERY, *DOCUMENTS]).data]  # fmt: skip
    for vector in vectors:
        assert math.isclose(math.sqrt(sum(v * v for v in vector)), 1.0, rel_tol=1e-3)
    scored = _post(
        client, "/score", {"model": "demo-embedding", "queries": QUERY, "documents": DOCUMENTS}
    )
    for item, vector in zip(scored["data"], vectors[1:], strict=True):
        cosine = sum(a * b for a, b in zip(vectors[0], vector, strict=True))
        assert math.isclose(item["score"], cosine, rel_tol=1e-3, abs_tol=1e-3)
    ranked = _post(
        client, "/rerank", {"model": "demo-embedding", "query": QUERY, "documents": DOCUMENTS}
    )
    assert sorted(r["index"] for r in ranked["results"]) == [0, 1, 2]


def test_chat_to_the_embedding_demo_names_what_it_serves(embedder: RemoteAiforgeServer) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        embedder.client().chat.completions.create(
            model="demo-embedding", messages=[{"role": "user", "content": "hi"}]
        )
    assert "/v1/embeddings" in refused.value.message
    mismatched = post_json(
        embedder, "/v1/score", {"model": "demo-embedding", "text_1": ["a", "b"], "text_2": ["c"]}
    )
    assert mismatched.status_code == 400
    assert mismatched.json()["error"]["param"] == "text_1"
