"""TransformersEngine: the replica command line it describes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from aiforge.config import Settings
from aiforge.engines.base import ReplicaSpec
from aiforge.engines.server.main import parse_args
from aiforge.engines.transformers import TransformersEngine
from aiforge.engines.transformers.launcher import SPIN_ENV, thread_env


def test_launch_plan_runs_the_module_with_the_common_flags(tmp_path: Path) -> None:
    spec = ReplicaSpec(
        model_path=tmp_path, served_model_name="qwen", port=8123, max_model_len=2048,
        threads=2, is_embedding=True, extra_args=("--x",),
    )  # fmt: skip
    plan = TransformersEngine(max_num_seqs=4).launch_plan(spec)
    argv = list(plan.argv)
    assert argv[:3] == [sys.executable, "-m", "aiforge.engines.transformers"]
    flags = dict(zip(argv[3::2], argv[4::2], strict=False))
    assert flags["--model"] == str(tmp_path)
    assert flags["--served-model-name"] == "qwen"
    assert flags["--port"] == "8123"
    assert flags["--host"] == "127.0.0.1"
    assert flags["--dtype"] == "auto"
    assert flags["--max-model-len"] == "2048"
    assert flags["--threads"] == "2"
    assert flags["--max-num-seqs"] == "4"
    assert argv[-2:] == ["--embedding", "--x"]
    assert plan.health_path == "/health"


def test_supports_hf_directories_only(tmp_path: Path) -> None:
    engine = TransformersEngine()
    assert engine.name == "transformers"
    assert engine.availability().ok
    assert not engine.supports(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    assert engine.supports(tmp_path)
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert not engine.supports(gguf)


def test_optional_flags_are_left_out(tmp_path: Path) -> None:
    plan = TransformersEngine().launch_plan(ReplicaSpec(tmp_path, "m", 1))
    assert "--max-model-len" not in plan.argv
    assert "--threads" not in plan.argv
    assert "--embedding" not in plan.argv


def test_replica_flags_and_settings_size_or_disable_the_prefix_cache(tmp_path: Path) -> None:
    base = ["--model", str(tmp_path)]
    assert parse_args(base, Settings()).prefix_cache_sequences == 4
    assert parse_args([*base, "--no-prefix-cache"], Settings()).prefix_cache_sequences == 0
    sized = parse_args([*base, "--prefix-cache-sequences", "2"], Settings())
    assert sized.prefix_cache_sequences == 2
    assert parse_args(base, Settings(prefix_cache=False)).prefix_cache_sequences == 0
    assert parse_args(base, Settings(prefix_cache_sequences=7)).prefix_cache_sequences == 7
    with pytest.raises(SystemExit):
        parse_args([*base, "--prefix-cache-sequences", "0"], Settings())


def test_openmp_threads_spin_briefly_unless_the_environment_says_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    plan = TransformersEngine().launch_plan(ReplicaSpec(tmp_path, "m", 1))
    assert dict(plan.env) == SPIN_ENV == {"GOMP_SPINCOUNT": "10000"}
    assert thread_env({"OMP_WAIT_POLICY": "ACTIVE"}) == {}
    assert thread_env({"GOMP_SPINCOUNT": "300000"}) == {}
