"""``aiforge models`` (the catalog and what each model needs) and ``aiforge pull``."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from aiforge.config import ModelSource, Settings
from aiforge.models.catalog import CATALOG
from aiforge.models.memory import (
    WEIGHT_DTYPES,
    estimate_memory,
    format_bytes,
    resident_prefix_sequences,
)
from aiforge.models.sources import ModelSourceError, cached_model_path, resolve_model

DEFAULT_CONTEXT = 8192
TABLE_DTYPES = ("bf16", "fp8", "int4")


def _billions(n: int) -> str:
    return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.0f}M"


def catalog_rows(settings: Settings, *, context: int, sequences: int) -> list[dict[str, Any]]:
    """One JSON-ready row per catalog entry: facts, memory per dtype, download state."""
    rows = []
    resident = resident_prefix_sequences(
        settings.engine, prefix_cache=settings.prefix_cache,
        sequences=settings.prefix_cache_sequences,
    )  # fmt: skip
    for entry in CATALOG:
        params = entry.params
        memory = {
            dtype: estimate_memory(
                entry.architecture, dtype=dtype, context=min(context, entry.max_context_length),
                sequences=sequences, prefix_cache_sequences=resident,
            ).total
            for dtype in WEIGHT_DTYPES
        }  # fmt: skip
        local = cached_model_path(entry.repo_for(settings.model_source), settings)
        rows.append(
            {
                "name": entry.name, "repo": entry.repo_for(settings.model_source),
                "family": entry.family, "task": entry.task,
                "params": params.total, "active_params": params.active,
                "context_length": entry.context_length,
                "max_context_length": entry.max_context_length,
                "modalities": list(entry.modalities), "embedding_dim": entry.embedding_dim,
                "memory_bytes": memory, "downloaded": local is not None,
                "path": str(local) if local else None,
            }
        )  # fmt: skip
    return rows


def _params_cell(row: dict[str, Any]) -> str:
    if row["active_params"] != row["params"]:
        return f"{_billions(row['params'])} ({_billions(row['active_params'])} active)"
    return _billions(row["params"])


def _table(rows: list[dict[str, Any]], *, context: int, sequences: int) -> Table:
    seqs = "" if sequences == 1 else f" × {sequences} seqs"
    table = Table(title=f"aiforge model catalog — memory at {context:,} tokens{seqs}")
    for column in ("model", "task", "params", "context", "modalities"):
        table.add_column(column)
    for dtype in TABLE_DTYPES:
        table.add_column(dtype, justify="right")
    table.add_column("local", justify="center")
    for row in rows:
        table.add_row(
            f"{row['name']}\n[dim]{row['repo']}[/dim]", row["task"], _params_cell(row),
            f"{row['context_length'] // 1024}K", "+".join(row["modalities"]),
            *(format_bytes(row["memory_bytes"][dtype]) for dtype in TABLE_DTYPES),
            "[green]✓[/green]" if row["downloaded"] else "",
        )  # fmt: skip
    return table


def models_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print the catalog as JSON.")] = False,
    context: Annotated[
        int, typer.Option("--context", min=1, help="Tokens of context to size the KV cache for.")
    ] = DEFAULT_CONTEXT,
    sequences: Annotated[
        int, typer.Option("--sequences", min=1, help="Concurrent sequences to size for.")
    ] = 1,
) -> None:
    """List the model catalog: parameters, context, modalities, memory per dtype, and
    which models are already downloaded."""
    settings = Settings()
    rows = catalog_rows(settings, context=context, sequences=sequences)
    if as_json:
        typer.echo(json.dumps({"context": context, "sequences": sequences, "models": rows}))
        return
    console = Console()
    console.print(_table(rows, context=context, sequences=sequences))
    console.print(
        "[dim]memory = weights + KV cache (bf16; the sequences, plus "
        "AIFORGE_PREFIX_CACHE_SEQUENCES finished ones kept for prefix caching unless "
        "AIFORGE_PREFIX_CACHE=false or AIFORGE_ENGINE=vllm) + runtime overhead; a context "
        "above a model's maximum is capped. `aiforge pull NAME` downloads one.[/dim]"
    )


def pull_command(
    model: Annotated[
        str, typer.Argument(help="Catalog name (qwen3-0.6b) or repo id (Qwen/Qwen3-0.6B).")
    ],
    source: Annotated[
        ModelSource | None,
        typer.Option("--source", help="Where to download from (default: AIFORGE_MODEL_SOURCE)."),
    ] = None,
) -> None:
    """Download a model into aiforge's model cache, with progress."""
    settings = Settings()
    if source is not None:
        settings = settings.model_copy(update={"model_source": source})
    err = Console(stderr=True)
    try:
        resolved = resolve_model(model, settings, lambda line: err.print(f"aiforge: {line}"))
    except ModelSourceError as exc:
        err.print(Text("error: ", style="red") + Text(str(exc)))
        raise typer.Exit(1) from None
    typer.echo(str(resolved.path))


def register(app: typer.Typer) -> None:
    """Add ``models`` and ``pull`` to the ``aiforge`` command."""
    app.command("models")(models_command)
    app.command("pull")(pull_command)
