"""Engine registry: the ``--engine auto`` rule and engine lookup."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiforge.config import Settings
from aiforge.engines.registry import (
    EngineSelectionError,
    HostFacts,
    choose_engine,
    engine_class,
    select_engine,
)

CPU = HostFacts(gpu=False, vllm_ready=False)


@pytest.mark.parametrize(
    ("is_gguf", "facts", "expected"),
    [
        (False, HostFacts(gpu=True, vllm_ready=False), "vllm"),
        (True, HostFacts(gpu=True, vllm_ready=True), "llamacpp"),
        (True, CPU, "llamacpp"),
        (False, HostFacts(gpu=False, vllm_ready=True), "vllm"),
        (False, CPU, "transformers"),
    ],
)
def test_auto_follows_the_design_table(is_gguf: bool, facts: HostFacts, expected: str) -> None:
    choice = choose_engine("auto", is_gguf=is_gguf, facts=facts)
    assert choice.name == expected
    assert choice.reason


def test_the_demo_runs_on_transformers_even_with_vllm_ready() -> None:
    facts = HostFacts(gpu=False, vllm_ready=True)
    assert choose_engine("auto", is_gguf=False, facts=facts, is_demo=True).name == "transformers"


def test_explicit_engine_wins_and_says_so() -> None:
    choice = choose_engine("llamacpp", is_gguf=False, facts=HostFacts(gpu=True, vllm_ready=True))
    assert choice.name == "llamacpp"
    assert "requested" in choice.reason


def test_unknown_engine_is_a_clear_error() -> None:
    with pytest.raises(EngineSelectionError, match="choose one of: transformers"):
        engine_class("tensorrt")


def test_select_transformers_for_a_hf_directory(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    selected = select_engine("auto", tmp_path, Settings(data_dir=tmp_path), is_gguf=False,
                             facts=CPU)  # fmt: skip
    assert selected.engine.name == "transformers"
    assert "transformers" in selected.reason
    with pytest.raises(EngineSelectionError, match="cannot load"):
        select_engine("transformers", tmp_path / "missing", Settings(data_dir=tmp_path),
                      is_gguf=False)  # fmt: skip
