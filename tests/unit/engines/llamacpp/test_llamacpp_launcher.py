"""LlamaCppEngine: which paths it serves and the replica command (no llama.cpp needed)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from aiforge.engines.base import ReplicaSpec
from aiforge.engines.llamacpp.launcher import LlamaCppEngine
from aiforge.engines.llamacpp.paths import find_gguf
from aiforge.engines.llamacpp.runner import default_max_model_len


def test_supports_a_gguf_file_or_a_directory_holding_exactly_one(tmp_path: Path) -> None:
    engine = LlamaCppEngine()
    gguf = tmp_path / "one" / "model.Q8_0.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF")
    assert engine.supports(gguf)
    assert engine.supports(gguf.parent)
    assert find_gguf(gguf.parent) == gguf
    (gguf.parent / "other.gguf").write_bytes(b"GGUF")
    assert not engine.supports(gguf.parent)  # ambiguous
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    assert not engine.supports(hf)
    assert not engine.supports(hf / "config.json")
    assert not engine.supports(tmp_path / "missing.gguf")


def test_launch_plan_starts_the_replica_module(tmp_path: Path) -> None:
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    spec = ReplicaSpec(
        model_path=tmp_path, served_model_name="qwen", port=8123, max_model_len=2048, threads=2,
        extra_args=("--max-num-seqs", "4"),
    )  # fmt: skip
    plan = LlamaCppEngine().launch_plan(spec)
    assert plan.argv[:3] == (sys.executable, "-m", "aiforge.engines.llamacpp")
    args = plan.argv[3:]
    assert args[args.index("--model") + 1] == str(gguf)
    assert args[args.index("--served-model-name") + 1] == "qwen"
    assert args[args.index("--port") + 1] == "8123"
    assert args[args.index("--max-model-len") + 1] == "2048"
    assert args[args.index("--threads") + 1] == "2"
    assert args[-2:] == ("--max-num-seqs", "4")
    assert plan.health_path == "/health"


def test_launch_plan_makes_openmp_wait_passively(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    spec = ReplicaSpec(model_path=tmp_path, served_model_name="qwen", port=8123)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert LlamaCppEngine().launch_plan(spec).env["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # the operator's own choice wins
    assert LlamaCppEngine().launch_plan(spec).env["OMP_WAIT_POLICY"] == "ACTIVE"


def test_launch_plan_refuses_what_it_cannot_serve(tmp_path: Path) -> None:
    engine = LlamaCppEngine()
    with pytest.raises(ValueError, match="gguf"):
        engine.launch_plan(ReplicaSpec(model_path=tmp_path, served_model_name="x", port=1))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(ValueError, match="embedding"):
        engine.launch_plan(
            ReplicaSpec(model_path=gguf, served_model_name="x", port=1, is_embedding=True)
        )


def test_availability_names_the_install_command() -> None:
    availability = LlamaCppEngine().availability()
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        assert not availability.ok
        assert "GGML_NATIVE=OFF" in availability.reason
    else:
        assert availability.ok


@pytest.mark.parametrize(
    ("n_ctx_train", "max_num_seqs", "expected"),
    [(40960, 1, 4096), (40960, 16, 2048), (40960, 64, 1024), (512, 4, 512)],
)
def test_default_context_keeps_the_kv_cache_bounded(
    n_ctx_train: int, max_num_seqs: int, expected: int
) -> None:
    assert default_max_model_len(n_ctx_train, max_num_seqs) == expected
