"""How each engine launches a reranker: vLLM with the flags that make it a yes/no classifier
scored on the model card's prompt, transformers with ``--reranker``, llama.cpp not at all."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aiforge.engines.base import ReplicaSpec
from aiforge.engines.llamacpp.launcher import LlamaCppEngine
from aiforge.engines.transformers.launcher import TransformersEngine
from aiforge.engines.vllm import VllmOptions, vllm_argv
from aiforge.models.reranker import VLLM_SCORE_TEMPLATE


def _spec(path: Path, **fields: object) -> ReplicaSpec:
    return ReplicaSpec(model_path=path, served_model_name="r", port=8000, **fields)  # type: ignore[arg-type]


def _flag(argv: tuple[str, ...], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_vllm_serves_a_reranker_as_a_yes_no_classifier(tmp_path: Path) -> None:
    argv = vllm_argv(Path("/py"), _spec(tmp_path, is_reranker=True), VllmOptions())
    overrides = json.loads(_flag(argv, "--hf-overrides"))
    assert overrides == {
        "architectures": ["Qwen3ForSequenceClassification"],
        "classifier_from_token": ["no", "yes"],
        "is_original_qwen3_reranker": True,
    }
    assert _flag(argv, "--runner") == "pooling"
    assert _flag(argv, "--chat-template") == VLLM_SCORE_TEMPLATE
    # A pooling model takes none of the generation flags.
    assert "--reasoning-parser" not in argv
    assert "--enable-auto-tool-choice" not in argv


def test_vllm_chat_models_get_no_reranker_flags(tmp_path: Path) -> None:
    argv = vllm_argv(Path("/py"), _spec(tmp_path), VllmOptions())
    assert "--hf-overrides" not in argv
    assert "--chat-template" not in argv


def test_transformers_is_told_it_serves_a_reranker(tmp_path: Path) -> None:
    argv = TransformersEngine().launch_plan(_spec(tmp_path, is_reranker=True)).argv
    assert "--reranker" in argv
    assert "--reranker" not in TransformersEngine().launch_plan(_spec(tmp_path)).argv


def test_llamacpp_refuses_a_reranker_at_deploy_time(tmp_path: Path) -> None:
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(ValueError, match="does not serve rerankers"):
        LlamaCppEngine().launch_plan(_spec(gguf, is_reranker=True))
