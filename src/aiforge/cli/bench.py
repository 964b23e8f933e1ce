"""``aiforge bench``: a load generator for any OpenAI-compatible endpoint (aiforge or not).

The command parses and checks its options (every mistake is a usage error before a
request goes out), then hands over to :mod:`aiforge.bench`: sources of requests, the load
schedule, the timing client, the statistics, the table, the JSON and the plot.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console

from aiforge.config import Settings

_errors = Console(stderr=True)

Api = Literal["chat", "completions"]
WorkloadName = Literal["random", "chat"]

_LENGTHS = "N, random:MIN-MAX or normal:MEAN,STDDEV"


@dataclass(frozen=True)
class _Target:
    base_url: str
    model: str | None
    api_key: str | None


def _target(base_url: str | None, model: str | None, api_key: str | None) -> _Target:
    """The endpoint to load; aiforge's admin key is used only for the local aiforge (the
    default URL), never sent to a server named on the command line."""
    if base_url is not None:
        return _Target(base_url.rstrip("/"), model, api_key)
    from aiforge.platform.api.client import stored_admin_key

    settings = Settings()
    key = api_key or settings.admin_key or stored_admin_key(settings.data_dir)
    return _Target(f"http://{settings.host}:{settings.port}/v1", model, key)


def _first_model(target: _Target, timeout_s: float) -> str:
    """The first model ``/models`` lists; exits with the reason when there is none."""
    import httpx

    headers = {"Authorization": f"Bearer {target.api_key}"} if target.api_key else {}
    try:
        response = httpx.get(f"{target.base_url}/models", headers=headers, timeout=timeout_s)
        response.raise_for_status()
        models = response.json().get("data") or []
    except (httpx.HTTPError, ValueError, AttributeError) as error:
        _errors.print(f"[red]error:[/red] cannot list the models at {target.base_url}: {error}")
        _errors.print("pass --model, or check --base-url and --api-key")
        raise typer.Exit(1) from None
    if not models:
        raise typer.BadParameter("the server lists no models; pass --model")
    return str(models[0]["id"])


def _lengths(text: str, flag: str) -> Any:
    from aiforge.bench.workload import LengthDistribution

    try:
        return LengthDistribution.parse(text)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint=flag) from None


def _tokenizer(path: Path | None) -> Any:
    from aiforge.bench.workload import WordTokenizer, load_tokenizer

    if path is None:
        return WordTokenizer()
    try:
        return load_tokenizer(path)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--tokenizer") from None


def _loads(
    concurrency: str | None, rate: str | None, sweep: str | None, max_concurrency: int | None
) -> list[Any]:
    from aiforge.bench.schedule import parse_loads

    if rate is not None and sweep is not None:
        raise typer.BadParameter("give --rate or --sweep, not both")
    try:
        return parse_loads(
            concurrency=concurrency, rate=rate or sweep, max_concurrency=max_concurrency
        )
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None


def _slo(text: str | None, stream: bool) -> Any:
    from aiforge.bench.stats import SLO

    if text is None:
        return None
    try:
        slo = SLO.parse(text)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--slo") from None
    if slo.needs_streaming and not stream:
        raise typer.BadParameter("TTFT, ITL and TPOT need streaming", param_hint="--slo")
    return slo


def _extra_body(text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except ValueError as error:
        raise typer.BadParameter(f"not JSON: {error}", param_hint="--extra-body") from None
    if not isinstance(value, dict):
        raise typer.BadParameter("must be a JSON object", param_hint="--extra-body")
    return value


@dataclass(frozen=True)
class _Workload:
    name: WorkloadName
    prompt: str | None
    output: str
    turns: int
    system_prompts: int
    system_tokens: int


def _source_factory(workload: _Workload, api: Api, tokenizer: Any, requests: int | None) -> Any:
    """The maker of request sources for the workload the options describe."""
    from aiforge.bench.source import source_factory
    from aiforge.bench.workload import ChatWorkloadSpec

    output = _lengths(workload.output, "--output-tokens")
    if workload.name == "random":
        prompt = _lengths(workload.prompt or "256", "--prompt-tokens")
        return source_factory("random", tokenizer, prompt_tokens=prompt, output_tokens=output,
                              as_messages=api == "chat")  # fmt: skip
    if api != "chat":
        raise typer.BadParameter("the chat workload needs --endpoint chat", param_hint="--workload")
    user = _lengths(workload.prompt or "random:50-100", "--prompt-tokens")
    if user.kind == "normal":
        raise typer.BadParameter(
            "the chat workload's user turns take N or random:MIN-MAX", param_hint="--prompt-tokens"
        )
    try:
        spec = ChatWorkloadSpec(
            conversations=max(1, -(-(requests or 1) // max(workload.turns, 1))),
            turns=workload.turns, system_prompts=workload.system_prompts,
            system_tokens=workload.system_tokens, user_tokens_min=user.low,
            user_tokens_max=user.high, max_tokens=output.high,
        )  # fmt: skip
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    return source_factory("chat", tokenizer, prompt_tokens=user, output_tokens=output, chat=spec)


def _show(document: dict[str, Any], levels: list[Any], title: str) -> None:
    from aiforge.bench.report import render_table

    console = Console()
    console.print(render_table(levels, title=title))
    machine = document["machine"]
    start, end = machine["load_average_start"][0], machine["load_average_end"][0]
    console.print(
        f"[dim]client machine: {machine['cpu_count']} CPUs, 1-minute load average "
        f"{start} at the start, {end} at the end; warm-up: {document['warmup']['requests']} "
        f"requests ({document['warmup']['errors']} errors)[/dim]",
        highlight=False,
    )
    for load, summary in levels:
        for message, count in sorted(summary.error_kinds.items(), key=lambda kv: -kv[1])[:3]:
            console.print(f"[red]{load.label}: {count} × {message}[/red]", highlight=False)
