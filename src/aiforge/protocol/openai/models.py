"""``/v1/models``: the models a server serves."""

from __future__ import annotations

from typing import Literal

from aiforge.protocol.openai.common import ResponseModel


class ModelCard(ResponseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    max_model_len: int | None = None
    task: Literal["chat", "embedding", "rerank"] | None = None
    """What the model serves (aiforge's replicas say; the catalog's task names): ``chat``
    (chat and completions), ``embedding`` (embeddings, score, rerank), ``rerank`` (rerank,
    score)."""


class ModelList(ResponseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
