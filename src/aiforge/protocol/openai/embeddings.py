"""``/v1/embeddings``: request and response bodies."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from aiforge.protocol.openai.common import Int, RequestModel, ResponseModel

EmbeddingInput = str | list[str] | list[Int] | list[list[Int]]


class EmbeddingRequest(RequestModel):
    model: str
    input: EmbeddingInput
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Int | None = Field(default=None, ge=1)
    user: str | None = None


class Embedding(ResponseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(ResponseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(ResponseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage
