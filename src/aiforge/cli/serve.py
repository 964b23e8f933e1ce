"""``aiforge serve``: one model behind the OpenAI API, with the platform around it.

Steps, each with a progress line: resolve the model (download once, or build the offline
demo), pick the engine (``--engine auto`` says why), prepare it, start one replica on a
free local port and wait for its health, then serve the gateway with uvicorn. Ctrl-C or
SIGTERM stops the gateway and then the replica (SIGTERM, SIGKILL after a grace period).

``--replica-url URL`` (repeatable) attaches the gateway to replicas that are already
running instead of starting one — several gateways can share one replica, and a gateway
can be killed and restarted without restarting the model. The model name is read from the
replica's ``/v1/models`` unless ``--served-model-name`` gives it; so is the engine of a vLLM
replica (``owned_by: vllm``; ``--replica-engine vllm`` says it for one not up yet), whose
``reasoning`` field the gateway renames to ``reasoning_content``.

When the platform layer is installed (:mod:`aiforge.platform.bootstrap`) every ``/v1`` route
needs an API key: the first start prints the admin key once (``AIFORGE_ADMIN_KEY`` sets
it instead). ``--no-auth`` serves without keys, limits or metering (benchmarks only).
"""

from __future__ import annotations

import asyncio
import importlib.util
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import httpx
import typer
import uvicorn

from aiforge.cluster.health import ReplicaHealthMonitor
from aiforge.cluster.replicas import Replica, ReplicaState, ReplicaTable
from aiforge.cluster.runtimes.local import LocalReplicaProcess, LocalRuntime, ReplicaStartError
from aiforge.config import Settings
from aiforge.engines.base import ReplicaSpec
from aiforge.engines.registry import (
    ENGINE_NAMES,
    EngineSelectionError,
    prepare_engine,
    select_engine,
)
from aiforge.gateway.access import DiscardUsage, OpenAccess
from aiforge.gateway.app import create_app
from aiforge.testing.server import free_port


def progress(line: str) -> None:
    typer.echo(f"aiforge: {line}", err=True)


@dataclass
class ServeOptions:
    replica_urls: Sequence[str] = ()
    served_model_name: str | None = None
    replica_engine: str = ""
    """Engine of the attached replicas when known ahead; else read from ``/v1/models``."""
    threads: int | None = None
    no_auth: bool = False
    replicas: list[LocalReplicaProcess] = field(default_factory=list)
    """Replicas this process started (stopped on exit, however it exits)."""


class ServeError(RuntimeError):
    """A failure the user can act on; printed without a traceback."""


_ENGINE_HELP = f"auto or one of: {', '.join(ENGINE_NAMES)} (default: AIFORGE_ENGINE or auto)."
_MODEL_HELP = (
    "Model id (e.g. Qwen/Qwen3-0.6B), a local directory or .gguf file, or `demo` (offline, "
    "random weights). Default: AIFORGE_MODEL or Qwen/Qwen3-0.6B."
)


def serve(
    model: Annotated[str | None, typer.Option("--model", "-m", help=_MODEL_HELP)] = None,
    engine: Annotated[str | None, typer.Option("--engine", "-e", help=_ENGINE_HELP)] = None,
    host: Annotated[str | None, typer.Option(help="Gateway address (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Gateway port (default 8000).")] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Database, logs, usage journal, admin key.")
    ] = None,
    max_model_len: Annotated[
        int | None, typer.Option(help="Context length the replica allows.")
    ] = None,
    dtype: Annotated[
        str | None, typer.Option(help="Weights dtype: auto, bfloat16, float16, float32.")
    ] = None,
    served_model_name: Annotated[
        str | None, typer.Option(help="Name clients use for the model.")
    ] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads for the replica.")] = None,
    replica_url: Annotated[
        list[str] | None,
        typer.Option(
            "--replica-url",
            help="Attach to a running replica at this URL instead of starting one (repeatable).",
        ),
    ] = None,
    replica_engine: Annotated[
        str | None,
        typer.Option(
            help="Engine of the --replica-url replicas (e.g. vllm) when /v1/models cannot say."
        ),
    ] = None,
    no_auth: Annotated[
        bool,
        typer.Option(
            "--no-auth", help="Serve without API keys, limits or metering (bare-proxy benchmarks)."
        ),
    ] = False,
) -> None:
    """Serve a model behind the OpenAI API (gateway + one replica)."""
    overrides: dict[str, Any] = {
        "model": model, "engine": engine, "host": host, "port": port, "data_dir": data_dir,
        "max_model_len": max_model_len, "dtype": dtype,
    }  # fmt: skip
    settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    options = ServeOptions(
        replica_urls=tuple(replica_url or ()),
        served_model_name=served_model_name,
        replica_engine=replica_engine or "",
        threads=threads,
        no_auth=no_auth,
    )
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        asyncio.run(run_service(settings, options))
    except KeyboardInterrupt:
        progress("stopped")
    except (ServeError, EngineSelectionError, ReplicaStartError) as exc:
        progress(f"error: {exc}")
        raise typer.Exit(1) from None
    finally:
        for replica in options.replicas:  # also after a crash or a second Ctrl-C
            replica.stop()
        signal.signal(signal.SIGTERM, previous)


def _terminate(signum: int, frame: FrameType | None) -> None:
    # SIGTERM takes the same path as Ctrl-C, so every replica is stopped on the way out.
    raise KeyboardInterrupt


async def run_service(settings: Settings, options: ServeOptions) -> None:
    """Start the platform, the replica(s) and the gateway; return when the gateway stops."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    platform = None if options.no_auth else _build_platform(settings)
    try:
        if platform is not None:
            await platform.start()
            _announce_admin_key(platform, settings)
        table = ReplicaTable()
        if options.replica_urls:
            await _attach_replicas(table, options, settings)
        else:
            await _start_replica(table, options, settings)
        liveness = {r.replica_id: r.is_alive for r in options.replicas}
        app = create_app(
            settings, replicas=table,
            authenticator=platform.authenticator if platform else OpenAccess(),
            admission=platform.admission if platform else OpenAccess(),
            usage_sink=platform.usage_sink if platform else DiscardUsage(),
            extra_routers=platform.routers if platform else (),
            monitor=ReplicaHealthMonitor(table, liveness=liveness),
        )  # fmt: skip
        await _serve_gateway(app, settings, table)
    finally:
        if platform is not None:
            await platform.stop()


def _build_platform(settings: Settings) -> Any:
    if importlib.util.find_spec("aiforge.platform.bootstrap") is None:
        progress("platform layer not installed: serving without API keys")
        return None
    from aiforge.platform.bootstrap import build_platform

    return build_platform(settings)


def _announce_admin_key(platform: Any, settings: Settings) -> None:
    key = getattr(platform, "new_admin_key", None)
    if key:
        progress(f"created the admin API key (shown once, stored in {settings.data_dir}):")
        typer.echo(f"\n    {key}\n", err=True)


async def _start_replica(table: ReplicaTable, options: ServeOptions, settings: Settings) -> None:
    resolved = await asyncio.to_thread(_resolve_model, settings)
    if resolved.is_demo:
        progress("the demo model has RANDOM weights: it produces random text (for trying "
                 "aiforge offline); serve a real model with --model Qwen/Qwen3-0.6B")  # fmt: skip
    selected = select_engine(
        settings.engine, resolved.path, settings, is_gguf=resolved.is_gguf,
        is_demo=resolved.is_demo,
    )  # fmt: skip
    progress(f"engine: {selected.engine.name} ({selected.reason})")
    await asyncio.to_thread(prepare_engine, selected.engine, progress)
    name = options.served_model_name or resolved.served_name
    port = free_port()
    spec = ReplicaSpec(
        model_path=resolved.path, served_model_name=name, port=port, dtype=settings.dtype,
        max_model_len=settings.max_model_len, is_embedding=resolved.is_embedding,
        threads=options.threads,
    )  # fmt: skip
    plan = selected.engine.launch_plan(spec)
    replica_id = f"{name}@{port}"
    url = f"http://{spec.host}:{port}"
    table.add(Replica(id=replica_id, model=name, url=url, engine=selected.engine.name))
    progress(f"starting replica {replica_id} ({selected.engine.name}) for {resolved.path}")
    runtime = LocalRuntime(settings.data_dir / "logs")
    process = runtime.spawn(plan, replica_id=replica_id, url=url)
    options.replicas.append(process)
    table.get(replica_id).pid = process.pid
    await runtime.wait_ready(process, plan, progress, timeout_s=settings.replica_startup_timeout_s)
    table.set_state(replica_id, ReplicaState.READY)


def _resolve_model(settings: Settings) -> Any:
    from aiforge.models.sources import resolve_model

    return resolve_model(settings.model, settings, progress)


async def _attach_replicas(table: ReplicaTable, options: ServeOptions, settings: Settings) -> None:
    async with httpx.AsyncClient(timeout=5.0) as client:
        for raw_url in options.replica_urls:
            url = raw_url.rstrip("/").removesuffix("/v1")
            name, engine = await _replica_identity(client, url, options)
            replica_id = url.split("://", 1)[-1]
            healthy = await _healthy(client, url)
            state = ReplicaState.READY if healthy else ReplicaState.UNHEALTHY
            table.add(Replica(id=replica_id, model=name, url=url, state=state, engine=engine))
            shown = f", {engine}" if engine else ""
            progress(f"attached to replica {replica_id} serving {name} ({state.value}{shown})")


async def _replica_identity(
    client: httpx.AsyncClient, url: str, options: ServeOptions
) -> tuple[str, str]:
    """``(model, engine)`` of the replica at ``url``: what the options say, the rest read
    from its ``/v1/models`` (the engine is known there only for vLLM, ``owned_by: vllm``)."""
    name = options.served_model_name
    try:
        response = await client.get(url + "/v1/models")
        entry = response.json()["data"][0]
        model, owner = str(entry["id"]), entry.get("owned_by")
    except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        if name is None:
            raise ServeError(
                f"cannot read the model served at {url}/v1/models ({exc}); is the replica "
                "running? Pass --served-model-name to attach before it is up."
            ) from None
        return name, options.replica_engine
    engine = options.replica_engine or ("vllm" if owner == "vllm" else "")
    return name or model, engine


async def _healthy(client: httpx.AsyncClient, url: str) -> bool:
    try:
        return (await client.get(url + "/health")).status_code == 200
    except httpx.HTTPError:
        return False


async def _serve_gateway(app: Any, settings: Settings, table: ReplicaTable) -> None:
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level="warning", access_log=False,
        ws="none", lifespan="on", timeout_graceful_shutdown=10,
    )  # fmt: skip
    server = uvicorn.Server(config)
    models = ", ".join(table.models())
    progress(f"serving {models} at http://{settings.host}:{settings.port}/v1 "
             "(OpenAI API; Ctrl-C stops)")  # fmt: skip
    await server.serve()
    if not server.started:
        raise ServeError(f"the gateway could not listen on {settings.host}:{settings.port}")


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m aiforge.cli.serve``: the serve command on its own."""
    command = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    register(command)
    command(args=list(argv) if argv is not None else sys.argv[1:], prog_name="aiforge serve")


if __name__ == "__main__":
    main()
