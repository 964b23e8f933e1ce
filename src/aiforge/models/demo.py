"""The offline demo model: a tiny Qwen3 with random weights, built here in seconds.

``aiforge serve --model demo`` must work on a machine with no network at all, so the demo
model is made from nothing: a byte-level BPE tokenizer trained on generated text
(:mod:`aiforge.models.demo_tokenizer`, with Qwen's special tokens and chat template) and a
Qwen3-architecture model with random weights sized to that vocabulary. It exercises every
code path a real Qwen3 does (chat template, thinking, tool-call markup, streaming) but its
output is random text, and it says so: served name ``demo``, ``aiforge_demo`` in its
``config.json``, a model card, and :data:`DEMO_WARNING` for the server to print.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from aiforge.config import Settings
from aiforge.models.demo_build import build_once, special_token_ids
from aiforge.models.demo_tokenizer import build_demo_tokenizer
from aiforge.models.random_weights import write_random_qwen3

DEMO_NAME = "demo"
"""What ``--model`` accepts and the name the demo model is served under."""
DEMO_VERSION = 1
"""Bump when the demo's tokenizer, template or shape changes: a new one is built."""
DEMO_CONFIG_FLAG = "aiforge_demo"
DEMO_WARNING = (
    "Serving the aiforge demo model: a tiny Qwen3 with RANDOM weights. It exercises the whole "
    "service offline but its replies are random text. Use --model Qwen/Qwen3-0.6B (or any "
    "model or local path) for real answers."
)

DEMO_SHAPE: dict[str, Any] = {
    "hidden_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "intermediate_size": 256,
    "max_position_embeddings": 32768,
}
"""Small enough to build in a second and decode in milliseconds on any CPU."""

_MODEL_CARD = """\
# aiforge demo model (random weights)

A tiny Qwen3-architecture model with **random weights** and a small byte-level BPE
tokenizer that aiforge trained itself, with Qwen's special tokens and chat template.
It was built on this machine by `aiforge` without any network access.

It produces **random text**. It exists so that `aiforge serve --model demo` works
offline and exercises the whole service (chat template, thinking, tool-call markup,
streaming). For real answers serve a real model, e.g. `aiforge serve --model Qwen/Qwen3-0.6B`.
"""


def demo_model_dir(settings: Settings) -> Path:
    """Where the demo model lives once built (nothing is created)."""
    return settings.models_dir / f"aiforge-demo-v{DEMO_VERSION}"


def ensure_demo_model(settings: Settings) -> Path:
    """Return the demo model's directory, building it first if it is not there yet (safe
    across processes: see :func:`~aiforge.models.demo_build.build_once`)."""
    return build_once(demo_model_dir(settings), _build)


def is_demo_model(path: Path) -> bool:
    """Whether ``path`` holds a model built by :func:`ensure_demo_model`."""
    config = path / "config.json"
    if not config.is_file():
        return False
    try:
        return bool(json.loads(config.read_text()).get(DEMO_CONFIG_FLAG, False))
    except (OSError, ValueError):
        return False


def _build(out_dir: Path) -> None:
    tokenizer_dir = out_dir / ".tokenizer"
    vocab_size = build_demo_tokenizer(tokenizer_dir)
    ids = special_token_ids(tokenizer_dir)
    write_random_qwen3(
        out_dir / "model",
        tokenizer_dir=tokenizer_dir,
        shape=DEMO_SHAPE,
        dtype="float32",
        vocab_size=vocab_size,
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        **{DEMO_CONFIG_FLAG: True},
    )
    _write_generation_config(out_dir / "model", ids)
    (out_dir / "model" / "README.md").write_text(_MODEL_CARD)
    # Flatten: the published directory is the model itself.
    shutil.rmtree(tokenizer_dir)
    for item in (out_dir / "model").iterdir():
        item.rename(out_dir / item.name)
    (out_dir / "model").rmdir()


def _write_generation_config(model_dir: Path, ids: dict[str, int]) -> None:
    """Qwen3's generation defaults: stop at either end marker, its recommended sampling."""
    config = {
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]],
        "pad_token_id": ids["<|endoftext|>"],
        "do_sample": True,
        "temperature": 0.6,
        "top_p": 0.95,
        "top_k": 20,
    }
    (model_dir / "generation_config.json").write_text(json.dumps(config, indent=2))
