"""``TransformersEngine``: how to launch a transformers replica process."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from aiforge.engines.base import Availability, Engine, LaunchPlan, ReplicaSpec

__all__ = ["SPIN_ENV", "TransformersEngine", "thread_env"]

SPIN_ENV = {"GOMP_SPINCOUNT": "10000"}
"""How long torch's OpenMP threads spin before sleeping: 10,000 turns of libgomp's wait
loop (well under a millisecond) instead of its default 300,000. A decode step is hundreds of
short parallel ops a few microseconds of Python apart, which a short spin still covers; but
the replica has more threads than the OpenMP team (the event loop that streams every token,
the HTTP client's, neighbours'), and with as many OpenMP threads as cores each of their
wake-ups preempts a team thread while its partners spin at the next barrier for as long as
the spin lasts. Measured on a loaded 2-core machine (median decode step of plain
``generate``, Qwen3-0.6B shape, 2 threads, 8 rows): spinning without bound 2.3 s, 10,000
turns 0.39 s, passive waiting 0.31 s; less loaded (1 row), 96 / 99 / 139 ms: passive
waiting costs a third of the speed whenever a core is free, the short spin almost nothing.
(A replica loads its model in a worker thread, so it runs two OpenMP teams, and libgomp
throttles the spin to 1,000 turns when its threads outnumber the cores, which would
explain why the replica kept fewer cores busy than ``generate`` in one thread.)"""


def thread_env(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """:data:`SPIN_ENV`, unless the environment already says how OpenMP should wait."""
    if "OMP_WAIT_POLICY" in environ or "GOMP_SPINCOUNT" in environ:
        return {}
    return dict(SPIN_ENV)


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
        return LaunchPlan(argv=tuple(argv), env=thread_env(), startup_timeout_s=120.0)
