"""The seam every engine sits behind.

An engine runs one *replica*: a process that serves the OpenAI-compatible endpoints
(``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``, ``/v1/models``,
``/health``) on a local port. An :class:`Engine` only knows how to *describe* that process
(its command line and environment) and how to get ready to run it (for example, create the
engine's own virtual environment). Starting, health-checking and stopping the process is the
runtime's job (:mod:`aiforge.cluster.runtimes.local`), so the same engine can later run as a
Ray actor on another node.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

ProgressCallback = Callable[[str], None]
"""Receives one human-readable line per step of a long operation."""


@dataclass(frozen=True, slots=True)
class ReplicaSpec:
    """What one replica must serve, and where."""

    model_path: Path
    """A local model directory (Hugging Face layout) or a ``.gguf`` file."""
    served_model_name: str
    port: int
    host: str = "127.0.0.1"
    dtype: str = "auto"
    max_model_len: int | None = None
    is_embedding: bool = False
    is_reranker: bool = False
    """A yes/no reranker (Qwen3-Reranker): served for ``/v1/rerank`` and ``/v1/score`` only."""
    load_format: str | None = None
    """``"dummy"`` makes vLLM skip loading weights (benchmarks on real shapes)."""
    extra_args: tuple[str, ...] = ()
    threads: int | None = None
    cpus: tuple[int, ...] = ()
    """The CPUs the replica runs on (its runtime pins it there); empty: any this process may
    use. Engines that bind threads to CPUs themselves (vLLM) bind to these."""


@dataclass(frozen=True, slots=True)
class LaunchPlan:
    """A process to start: the runtime runs exactly this."""

    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    """Added to (not replacing) the parent environment."""
    health_path: str = "/health"
    startup_timeout_s: float = 300.0


@dataclass(frozen=True, slots=True)
class Availability:
    ok: bool
    reason: str = ""
    """When not ok: what is missing and the command that fixes it."""


class Engine(abc.ABC):
    """Describes how to run one replica of a model with one inference engine."""

    name: ClassVar[str]
    dialect: ClassVar[str] = "openai"
    """How the gateway reads this engine's answers (:mod:`aiforge.gateway.dialects`):
    ``openai`` for aiforge's own replica server, ``vllm`` for vLLM's."""

    @abc.abstractmethod
    def availability(self) -> Availability:
        """Whether this engine can run here, without installing anything."""

    def prepare(self, progress: ProgressCallback) -> None:  # noqa: B027 - optional hook
        """Install what the engine needs (idempotent). Called before the first launch."""

    @abc.abstractmethod
    def supports(self, model_path: Path) -> bool:
        """Whether this engine can load the model at ``model_path``."""

    @abc.abstractmethod
    def launch_plan(self, spec: ReplicaSpec) -> LaunchPlan:
        """The command that starts a replica serving ``spec``."""
