"""The offline demo models, by served name: each is built on this machine from nothing.

``demo`` is the chat model (:mod:`aiforge.models.demo`); other kinds (embedding, reranker,
vision) register here beside it, each from its own module, so ``--model <name>`` and a
deployment's ``model`` resolve every demo the same way and nothing is ever downloaded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiforge.config import Settings
from aiforge.models import demo, demo_embedding, demo_reranker, demo_vl


@dataclass(frozen=True, slots=True)
class DemoModel:
    """One offline demo model: the name it is served under and how to build it."""

    name: str
    ensure: Callable[[Settings], Path]
    """Return the model's directory, building it first if needed (safe across processes)."""
    description: str


DEMO_MODELS: dict[str, DemoModel] = {
    demo.DEMO_NAME: DemoModel(
        name=demo.DEMO_NAME,
        ensure=demo.ensure_demo_model,
        description="chat: a tiny Qwen3 with random weights (thinking, tools, JSON)",
    ),
    demo_embedding.DEMO_EMBEDDING_NAME: DemoModel(
        name=demo_embedding.DEMO_EMBEDDING_NAME,
        ensure=demo_embedding.ensure_demo_embedding,
        description="embeddings and score: a tiny Qwen3-Embedding with random weights",
    ),
    demo_reranker.DEMO_RERANKER_NAME: DemoModel(
        name=demo_reranker.DEMO_RERANKER_NAME,
        ensure=demo_reranker.ensure_demo_reranker,
        description="rerank and score: a tiny Qwen3-Reranker with random weights",
    ),
    demo_vl.DEMO_VL_NAME: DemoModel(
        name=demo_vl.DEMO_VL_NAME,
        ensure=demo_vl.ensure_demo_vl_model,
        description="vision: a tiny Qwen3-VL with random weights (image_url parts)",
    ),
}
"""Every demo model, by the name ``--model`` accepts (and clients send)."""


def find_demo(name: str) -> DemoModel | None:
    """The demo model served as ``name``, or None."""
    return DEMO_MODELS.get(name)
