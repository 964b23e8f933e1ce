"""Shared GGUF files for the llama.cpp engine tests (built once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiforge.testing.gguf import tiny_qwen3_gguf


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Qwen3 GGUF (F32) with tokenizer files beside it and its HF source in
    ``hf/``. Shared by path with the integration tests of the same session."""
    return tiny_qwen3_gguf(tmp_path_factory.getbasetemp() / "tiny-qwen3-gguf")
