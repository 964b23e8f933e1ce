"""``demo-embedding``: a tiny Qwen3-Embedding-shaped model with random weights, built here.

Like ``demo`` (:mod:`aiforge.models.demo`) it needs no network: the demo tokenizer
(:mod:`aiforge.models.demo_tokenizer`) and a ``Qwen3Model`` with random weights laid out as
a sentence-transformers checkpoint that pools the last token and normalises, as
Qwen3-Embedding does. It serves ``/v1/embeddings`` and the ``score`` task (``/v1/score``,
and ``/v1/rerank`` by cosine similarity); its vectors are random, and it says so:
``aiforge_demo`` in its ``config.json`` and a model card.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from aiforge.config import Settings
from aiforge.models.demo import DEMO_CONFIG_FLAG, DEMO_SHAPE
from aiforge.models.demo_build import build_once, special_token_ids
from aiforge.models.demo_tokenizer import build_demo_tokenizer
from aiforge.models.random_weights import write_random_qwen3

DEMO_EMBEDDING_NAME = "demo-embedding"
DEMO_EMBEDDING_VERSION = 1
"""Bump when the model's tokenizer or shape changes: a new one is built."""

_MODEL_CARD = """\
# aiforge demo embedding model (random weights)

A tiny Qwen3-Embedding-shaped model (a `Qwen3Model`, last-token pooling, L2-normalised,
{hidden} dimensions) with **random weights** and aiforge's small demo tokenizer, built on
this machine without any network access.

Its vectors are **random**: it exists so that `/v1/embeddings` and `/v1/score` can be tried
offline. For real embeddings serve e.g. `--model Qwen/Qwen3-Embedding-0.6B`.
"""


def demo_embedding_dir(settings: Settings) -> Path:
    """Where the model lives once built (nothing is created)."""
    return settings.models_dir / f"aiforge-demo-embedding-v{DEMO_EMBEDDING_VERSION}"


def ensure_demo_embedding(settings: Settings) -> Path:
    """The model's directory, built first if it is not there (safe across processes)."""
    return build_once(demo_embedding_dir(settings), _build)


def _build(out_dir: Path) -> None:
    tokenizer_dir = out_dir / ".tokenizer"
    vocab_size = build_demo_tokenizer(tokenizer_dir)
    ids = special_token_ids(tokenizer_dir)
    write_random_qwen3(
        out_dir,
        tokenizer_dir=tokenizer_dir,
        shape=DEMO_SHAPE,
        dtype="float32",
        embedding=True,
        vocab_size=vocab_size,
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|endoftext|>"],
        pad_token_id=ids["<|endoftext|>"],
        **{DEMO_CONFIG_FLAG: True},
    )
    shutil.rmtree(tokenizer_dir)
    (out_dir / "README.md").write_text(_MODEL_CARD.format(hidden=DEMO_SHAPE["hidden_size"]))
