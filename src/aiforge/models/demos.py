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
from aiforge.models import demo


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
}
"""Every demo model, by the name ``--model`` accepts (and clients send)."""


def find_demo(name: str) -> DemoModel | None:
    """The demo model served as ``name``, or None."""
    return DEMO_MODELS.get(name)
