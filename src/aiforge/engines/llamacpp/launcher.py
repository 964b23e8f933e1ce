"""How to start a llama.cpp replica: ``python -m aiforge.engines.llamacpp``.

Importable without llama-cpp-python, so aiforge can say why the engine is unavailable.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import ClassVar

from aiforge.engines.base import Availability, Engine, LaunchPlan, ReplicaSpec
from aiforge.engines.llamacpp.paths import find_gguf

__all__ = ["INSTALL_HINT", "THREAD_ENV", "LlamaCppEngine"]

THREAD_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}
"""The replica's OpenMP settings, read once when libgomp loads. ggml's threads meet at an
OpenMP barrier after every graph node; by default libgomp spins there, and on a machine
with as many ggml threads as cores, the replica's own Python threads (the event loop, the
sampler) or any neighbour preempt one spinner while the other burns its core waiting:
decoding ran 2-4x slower per CPU-second under load. Passive waiting sleeps instead.
A value already in the environment wins."""

INSTALL_HINT = (
    "CMAKE_ARGS=\"-DGGML_NATIVE=OFF\" pip install 'aiforge[llamacpp]' "
    "(compiles llama.cpp, several minutes)"
)


class LlamaCppEngine(Engine):
    """GGUF models on CPU, continuously batched over llama.cpp's low-level API."""

    name: ClassVar[str] = "llamacpp"

    def availability(self) -> Availability:
        try:
            import llama_cpp  # noqa: F401
        except (ImportError, OSError) as exc:
            return Availability(False, f"llama-cpp-python is not usable ({exc}); {INSTALL_HINT}")
        return Availability(True)

    def supports(self, model_path: Path) -> bool:
        return find_gguf(model_path) is not None

    def launch_plan(self, spec: ReplicaSpec) -> LaunchPlan:
        gguf = find_gguf(spec.model_path)
        if gguf is None:
            raise ValueError(
                f"{spec.model_path} is not a .gguf file or a directory holding exactly one"
            )
        if spec.is_embedding:
            raise ValueError(
                "the llama.cpp engine does not serve embedding models; use the transformers engine"
            )
        if spec.is_reranker:
            raise ValueError(
                "the llama.cpp engine does not serve rerankers; use the transformers or vllm engine"
            )
        argv = [
            sys.executable,
            "-m",
            "aiforge.engines.llamacpp",
            "--model",
            str(gguf),
            "--served-model-name",
            spec.served_model_name,
            "--host",
            spec.host,
            "--port",
            str(spec.port),
        ]
        if spec.max_model_len is not None:
            argv += ["--max-model-len", str(spec.max_model_len)]
        if spec.threads is not None:
            argv += ["--threads", str(spec.threads)]
        argv += spec.extra_args
        env = {key: os.environ.get(key, value) for key, value in THREAD_ENV.items()}
        return LaunchPlan(argv=tuple(argv), env=env, startup_timeout_s=120.0)
