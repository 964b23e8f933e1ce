"""From a deployment to the command that runs one of its replicas.

:func:`prepare_launch` resolves the model (downloading it once, with progress), picks the
engine (``auto`` says why), prepares it (e.g. its virtual environment) and asks it for the
:class:`~aiforge.engines.base.LaunchPlan` of a replica on ``port``. It blocks, possibly
for minutes: runtimes call it in a worker thread. Errors a user can fix come out as
:class:`~aiforge.models.sources.ModelSourceError` or
:class:`~aiforge.engines.registry.EngineSelectionError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aiforge.cluster.deployments import DeploymentSpec
from aiforge.config import Settings
from aiforge.engines.base import LaunchPlan, ProgressCallback, ReplicaSpec
from aiforge.engines.registry import prepare_engine, select_engine
from aiforge.models.sources import resolve_model

__all__ = ["DEMO_WARNING", "PreparedLaunch", "prepare_launch"]

DEMO_WARNING = (
    "the demo model has RANDOM weights: it produces random text (for trying aiforge "
    "offline); serve a real model with --model Qwen/Qwen3-0.6B"
)


@dataclass(frozen=True, slots=True)
class PreparedLaunch:
    """Everything a runtime needs to start one replica."""

    plan: LaunchPlan
    engine: str
    dialect: str
    """The engine's answer dialect (:mod:`aiforge.gateway.dialects`)."""
    model_path: Path
    is_demo: bool


def prepare_launch(
    spec: DeploymentSpec,
    settings: Settings,
    port: int,
    progress: ProgressCallback,
    cpus: tuple[int, ...] = (),
) -> PreparedLaunch:
    """The launch of one replica of ``spec`` listening on ``port``, on ``cpus`` (empty: any;
    see :mod:`aiforge.cluster.cpus`) (blocking).

    The spec's fields win; where it leaves one open (``engine="auto"``, ``dtype="auto"``,
    no ``max_model_len``) the settings' value applies (``AIFORGE_ENGINE`` and friends).
    """
    resolved = resolve_model(spec.model, settings, progress)
    if resolved.is_demo:
        progress(DEMO_WARNING)
    requested = spec.engine if spec.engine != "auto" else settings.engine
    selected = select_engine(
        requested, resolved.path, settings, is_gguf=resolved.is_gguf, is_demo=resolved.is_demo
    )
    engine = selected.engine
    progress(f"{spec.name}: engine {engine.name} ({selected.reason})")
    prepare_engine(engine, progress)
    replica = ReplicaSpec(
        model_path=resolved.path,
        served_model_name=spec.name,
        port=port,
        dtype=spec.dtype if spec.dtype != "auto" else settings.dtype,
        max_model_len=spec.max_model_len or settings.max_model_len,
        is_embedding=resolved.is_embedding,
        is_reranker=resolved.is_reranker,
        extra_args=spec.engine_args,
        threads=spec.threads,
        cpus=cpus,
    )
    return PreparedLaunch(
        plan=engine.launch_plan(replica),
        engine=engine.name,
        dialect=engine.dialect,
        model_path=resolved.path,
        is_demo=resolved.is_demo,
    )
