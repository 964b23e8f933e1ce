"""Embeddings through ``aiforge serve`` with the tiny Qwen3-Embedding-style model."""

from __future__ import annotations

import math

from e2e_helpers import post_json

from aiforge.testing.openai_schema import assert_conforms
from aiforge.testing.server import RemoteAiforgeServer


def test_embeddings(embedding_server: RemoteAiforgeServer) -> None:
    raw = post_json(
        embedding_server, "/v1/embeddings", {"model": "tiny-embed", "input": ["hello", "world"]}
    )
    assert raw.status_code == 200
    assert_conforms("CreateEmbeddingResponse", raw.json())
    result = embedding_server.client().embeddings.create(
        model="tiny-embed", input=["hello", "hello", "bye"]
    )
    vectors = [d.embedding for d in result.data]
    assert [d.index for d in result.data] == [0, 1, 2]
    assert vectors[0] == vectors[1]
    assert vectors[0] != vectors[2]
    for vector in vectors:
        assert math.isclose(math.sqrt(sum(v * v for v in vector)), 1.0, rel_tol=1e-3)
    assert result.usage.prompt_tokens >= 3
