"""``TransformersEngine``: how to launch a transformers replica process."""

from __future__ import annotations

import sys
from pathlib import Path

from aiforge.engines.base import Availability, Engine, LaunchPlan, ReplicaSpec

__all__ = ["TransformersEngine"]


class TransformersEngine(Engine):
    """Runs ``python -m aiforge.engines.transformers`` in aiforge's own interpreter.

    Needs nothing beyond aiforge's dependencies, so it is always available; it loads any
    Hugging Face model directory (one with a ``config.json``).
    """

    name = "transformers"

    def __init__(self, *, max_num_seqs: int = 8) -> None:
        self.max_num_seqs = max_num_seqs

    def availability(self) -> Availability:
        return Availability(ok=True)

    def supports(self, model_path: Path) -> bool:
        return model_path.is_dir() and (model_path / "config.json").is_file()

    def launch_plan(self, spec: ReplicaSpec) -> LaunchPlan:
        argv = [
            sys.executable, "-m", "aiforge.engines.transformers",
            "--model", str(spec.model_path),
            "--served-model-name", spec.served_model_name,
            "--host", spec.host,
            "--port", str(spec.port),
            "--dtype", spec.dtype,
            "--max-num-seqs", str(self.max_num_seqs),
        ]  # fmt: skip
        if spec.max_model_len is not None:
            argv += ["--max-model-len", str(spec.max_model_len)]
        if spec.threads is not None:
            argv += ["--threads", str(spec.threads)]
        if spec.is_embedding:
            argv.append("--embedding")
        if spec.is_reranker:
            argv.append("--reranker")
        argv += spec.extra_args
        # Start-up is seconds: loading weights, no compile step.
        return LaunchPlan(argv=tuple(argv), startup_timeout_s=120.0)
