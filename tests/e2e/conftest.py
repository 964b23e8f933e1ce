"""End-to-end fixtures: real ``aiforge serve`` subprocesses on tiny random Qwen3 models.

One session-scoped server per engine. ``transformers`` always runs; ``llamacpp`` and
``vllm`` run when available here and are *required* (fail instead of skip) when
``AIFORGE_REQUIRE_ENGINES`` lists them.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aiforge.config import Settings
from aiforge.testing.models import tiny_qwen3, tiny_qwen3_embedding
from aiforge.testing.server import RemoteAiforgeServer

ENGINES = ("transformers", "llamacpp", "vllm")
MODEL_NAME = "tiny"
MAX_MODEL_LEN = 1024
MAX_BODY_BYTES = 256 * 1024
SERVER_ENV = {"AIFORGE_MAX_BODY_BYTES": str(MAX_BODY_BYTES)}


def required_engines() -> set[str]:
    return {e.strip() for e in os.environ.get("AIFORGE_REQUIRE_ENGINES", "").split(",") if e}


def _unavailable(engine: str, reason: str) -> None:
    if engine in required_engines():
        pytest.fail(f"engine {engine} is required (AIFORGE_REQUIRE_ENGINES) but {reason}")
    pytest.skip(f"engine {engine}: {reason}")


def _model_for(engine: str, root: Path) -> tuple[Path, tuple[str, ...]]:
    """The tiny model file/dir this engine serves, and extra serve flags."""
    if engine == "transformers":
        return tiny_qwen3(root / "tiny"), ("--dtype", "float32")
    if engine == "llamacpp":
        if importlib.util.find_spec("llama_cpp") is None:
            _unavailable(engine, "llama_cpp is not installed (aiforge engines install llamacpp)")
        from aiforge.testing.gguf import tiny_qwen3_gguf

        return tiny_qwen3_gguf(root / "gguf"), ()
    from aiforge.engines import vllm

    availability = vllm.VllmEngine(Settings()).availability()
    if not availability.ok:
        _unavailable(engine, availability.reason)
    overrides: dict[str, Any] = getattr(vllm, "TINY_VLLM_OVERRIDES", {})
    return tiny_qwen3(root / "tiny-vllm", **overrides), ("--dtype", "float32")


@pytest.fixture(scope="session", params=ENGINES)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RemoteAiforgeServer]:
    """A running ``aiforge serve`` for each engine, serving the tiny chat model as ``tiny``."""
    engine: str = request.param
    root = tmp_path_factory.mktemp(f"e2e-{engine}")
    model, flags = _model_for(engine, root)
    args = ("--served-model-name", MODEL_NAME, "--max-model-len", str(MAX_MODEL_LEN), *flags)
    timeout = 900.0 if engine == "vllm" else 300.0
    with RemoteAiforgeServer(
        model,
        engine=engine,
        serve_args=args,
        env=SERVER_ENV,
        data_dir=root / "data",
        startup_timeout_s=timeout,
    ) as remote:
        yield remote


@pytest.fixture(scope="session")
def embedding_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RemoteAiforgeServer]:
    """``aiforge serve`` on the tiny embedding model (transformers), served as ``tiny-embed``."""
    root = tmp_path_factory.mktemp("e2e-embed")
    model = tiny_qwen3_embedding(root / "tiny-embed")
    args = ("--served-model-name", "tiny-embed", "--dtype", "float32")
    with RemoteAiforgeServer(
        model, engine="transformers", serve_args=args, data_dir=root / "data"
    ) as remote:
        yield remote


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_qwen3(tmp_path_factory.mktemp("e2e-own") / "tiny")
