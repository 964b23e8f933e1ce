"""Tiny random Qwen3 models with the real Qwen3 tokenizer, for tests."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from aiforge.models.random_weights import TINY_QWEN3, write_random_qwen3


def fixtures_dir() -> Path:
    """``../shared/fixtures`` beside the repository (``AIFORGE_FIXTURES_DIR`` overrides)."""
    env = os.environ.get("AIFORGE_FIXTURES_DIR")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[3]
    for candidate in (repo.parent / "shared" / "fixtures", repo / "shared" / "fixtures"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        "test fixtures not found: expected ../shared/fixtures beside the repository "
        "or AIFORGE_FIXTURES_DIR"
    )


def qwen3_tokenizer_dir() -> Path:
    return fixtures_dir() / "qwen3-tokenizer"


def openai_openapi_spec() -> Path:
    return fixtures_dir() / "openai-openapi" / "openapi.yaml"


def tiny_qwen3(out_dir: Path, *, seed: int = 0, dtype: str = "float32", **overrides: Any) -> Path:
    """A ~10 MB Qwen3 chat model (random weights, real tokenizer) written to ``out_dir``."""
    return write_random_qwen3(
        out_dir,
        tokenizer_dir=qwen3_tokenizer_dir(),
        shape=TINY_QWEN3,
        seed=seed,
        dtype=dtype,
        **overrides,
    )


def tiny_qwen3_embedding(out_dir: Path, *, seed: int = 0) -> Path:
    """A tiny Qwen3-Embedding-style model (random weights, real tokenizer)."""
    return write_random_qwen3(
        out_dir,
        tokenizer_dir=qwen3_tokenizer_dir(),
        shape=TINY_QWEN3,
        seed=seed,
        dtype="float32",
        embedding=True,
    )
