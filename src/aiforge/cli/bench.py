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


def _one_minute(load_average: list[float | None]) -> str:
    return "unknown" if load_average[0] is None else f"{load_average[0]:.2f}"


def _show(document: dict[str, Any], levels: list[Any], title: str) -> None:
    from aiforge.bench.report import render_table

    console = Console()
    if not console.is_terminal:  # a file or a pipe: no reason to wrap at 80 columns
        console = Console(width=140)
    console.print(render_table(levels, title=title))
    machine = document["machine"]
    start, end = (_one_minute(machine[k]) for k in ("load_average_start", "load_average_end"))
    console.print(
        f"[dim]client machine: {machine['cpu_count']} CPUs, 1-minute load average "
        f"{start} at the start, {end} at the end; warm-up: {document['warmup']['requests']} "
        f"requests ({document['warmup']['errors']} errors)[/dim]",
        highlight=False,
    )
    for load, summary in levels:
        for message, count in sorted(summary.error_kinds.items(), key=lambda kv: -kv[1])[:3]:
            console.print(f"[red]{load.label}: {count} × {message}[/red]", highlight=False)


def _finish(run: Any, config: dict[str, Any], slo: Any, out: Path | None, plot: Path | None) -> int:
    """Show, save and plot ``run``; the exit status (1 when no request succeeded)."""
    from aiforge.bench.report import result_document
    from aiforge.bench.stats import summarize

    document = result_document(run, config, slo)
    levels = [(level.load, summarize(level.samples, slo)) for level in run.levels]
    title = f"aiforge bench: {config['model']} at {config['base_url']} ({config['workload']})"
    _show(document, levels, title)
    if out is not None:
        out.write_text(json.dumps(document, indent=1) + "\n")
        _errors.print(f"results written to {out}")
    if plot is not None:
        from aiforge.bench.plot import write_plot

        write_plot(levels, plot, title=f"{config['model']} — {config['workload']} workload")
        _errors.print(f"plot written to {plot}")
    return 0 if any(summary.completed for _, summary in levels) else 1


BaseUrlOption = Annotated[
    str | None,
    typer.Option(
        "--base-url", help="OpenAI-compatible base URL, ending in /v1 (default: the local aiforge)."
    ),
]
ModelOption = Annotated[
    str | None,
    typer.Option("--model", help="Model to load (default: the first /models lists)."),
]
ApiKeyOption = Annotated[
    str | None,
    typer.Option(
        "--api-key", envvar=["AIFORGE_API_KEY", "OPENAI_API_KEY"], help="API key (Bearer)."
    ),
]
EndpointOption = Annotated[
    Api,
    typer.Option("--endpoint", help="chat (/chat/completions) or completions (/completions)."),
]
ConcurrencyOption = Annotated[
    str | None,
    typer.Option(
        "--concurrency",
        "-c",
        help="Requests in flight; a comma-separated list sweeps them (1,4,16). The default: 1.",
    ),
]
RateOption = Annotated[
    str | None,
    typer.Option("--rate", "-r", help="Poisson request rate, requests/s (a list sweeps them)."),
]
SweepOption = Annotated[
    str | None,
    typer.Option("--sweep", help="Request rates to sweep, comma-separated (1,2,4,8)."),
]
MaxConcurrencyOption = Annotated[
    int | None,
    typer.Option(
        "--max-concurrency", min=1, help="With --rate/--sweep: at most this many in flight."
    ),
]
RequestsOption = Annotated[
    int | None,
    typer.Option(
        "--requests", "-n", min=1, help="Requests per load level (default 100 unless --duration)."
    ),
]
DurationOption = Annotated[
    float | None,
    typer.Option("--duration", min=0.1, help="Seconds per load level instead of a count."),
]
WarmupOption = Annotated[
    int,
    typer.Option("--warmup", min=0, help="Requests sent first and not measured."),
]
WorkloadOption = Annotated[
    WorkloadName,
    typer.Option(
        "--workload",
        help="random: independent prompts; chat: multi-turn chats sharing system prompts.",
    ),
]
PromptTokensOption = Annotated[
    str | None,
    typer.Option(
        "--prompt-tokens",
        help=f"Prompt (chat: user turn) length: {_LENGTHS}. Default 256 (chat: random:50-100).",
    ),
]
OutputTokensOption = Annotated[
    str,
    typer.Option("--output-tokens", help=f"max_tokens per request: {_LENGTHS}."),
]
TurnsOption = Annotated[
    int,
    typer.Option("--turns", min=1, help="Chat workload: user turns per conversation."),
]
SystemPromptsOption = Annotated[
    int,
    typer.Option(
        "--system-prompts",
        min=1,
        help="Chat workload: distinct system prompts shared by the conversations.",
    ),
]
SystemTokensOption = Annotated[
    int,
    typer.Option("--system-tokens", min=1, help="Chat workload: length of each system prompt."),
]
TokenizerOption = Annotated[
    Path | None,
    typer.Option(
        "--tokenizer",
        help="tokenizer.json or a model directory: lengths in its tokens (default: in words).",
    ),
]
StreamOption = Annotated[
    bool,
    typer.Option("--stream/--no-stream", help="Stream (needed for TTFT and ITL)."),
]
IgnoreEosOption = Annotated[
    bool,
    typer.Option("--ignore-eos", help="Ask for exactly max_tokens (vLLM/aiforge extension)."),
]
TemperatureOption = Annotated[
    float | None,
    typer.Option("--temperature", help="Sampling temperature (default: the server's)."),
]
ExtraBodyOption = Annotated[
    str | None,
    typer.Option("--extra-body", help="JSON object merged into every request body."),
]
SloOption = Annotated[
    str | None,
    typer.Option("--slo", help="Goodput objectives, e.g. ttft=500ms,itl=50ms,e2e=10s (also tpot)."),
]
SeedOption = Annotated[
    int,
    typer.Option("--seed", help="Seed of prompts, lengths and arrivals."),
]
TimeoutOption = Annotated[
    float,
    typer.Option("--timeout", min=0.1, help="Seconds before a request counts as failed."),
]
OutOption = Annotated[
    Path | None,
    typer.Option("--out", "-o", help="Write every sample and the summary as JSON here."),
]
PlotOption = Annotated[
    Path | None,
    typer.Option(
        "--plot", help="Write a PNG of latency and throughput against load here (needs matplotlib)."
    ),
]


def bench_command(
    base_url: BaseUrlOption = None,
    model: ModelOption = None,
    api_key: ApiKeyOption = None,
    endpoint: EndpointOption = "chat",
    concurrency: ConcurrencyOption = None,
    rate: RateOption = None,
    sweep: SweepOption = None,
    max_concurrency: MaxConcurrencyOption = None,
    requests: RequestsOption = None,
    duration: DurationOption = None,
    warmup: WarmupOption = 2,
    workload: WorkloadOption = "random",
    prompt_tokens: PromptTokensOption = None,
    output_tokens: OutputTokensOption = "64",
    turns: TurnsOption = 6,
    system_prompts: SystemPromptsOption = 4,
    system_tokens: SystemTokensOption = 1500,
    tokenizer: TokenizerOption = None,
    stream: StreamOption = True,
    ignore_eos: IgnoreEosOption = False,
    temperature: TemperatureOption = None,
    extra_body: ExtraBodyOption = None,
    slo: SloOption = None,
    seed: SeedOption = 0,
    timeout: TimeoutOption = 600.0,
    out: OutOption = None,
    plot: PlotOption = None,
) -> None:
    """Load an OpenAI-compatible endpoint and report TTFT, ITL, latency, throughput,
    goodput and errors: at a fixed concurrency, a Poisson request rate, or a sweep."""
    from aiforge.bench.client import BenchClient, Endpoint
    from aiforge.bench.plot import INSTALL_HINT, matplotlib_missing
    from aiforge.bench.report import RichProgress
    from aiforge.bench.runner import run_bench

    if plot is not None and matplotlib_missing():
        raise typer.BadParameter(INSTALL_HINT, param_hint="--plot")
    loads = _loads(concurrency, rate, sweep, max_concurrency)
    goal = _slo(slo, stream)
    count = requests if requests is not None or duration is not None else 100
    shape = _Workload(workload, prompt_tokens, output_tokens, turns, system_prompts, system_tokens)
    words = _tokenizer(tokenizer)
    make_source = _source_factory(shape, endpoint, words, count)
    body = _extra_body(extra_body)
    target = _target(base_url, model, api_key)
    chosen = target.model or _first_model(target, min(timeout, 30.0))
    where = Endpoint(
        target.base_url, chosen, target.api_key, endpoint, stream, ignore_eos, temperature,
        body, timeout,
    )  # fmt: skip
    config = {
        "base_url": target.base_url, "model": chosen, "endpoint": endpoint, "stream": stream,
        "workload": workload, "workload_shape": asdict(shape), "requests": count,
        "duration_s": duration, "warmup": warmup, "seed": seed, "ignore_eos": ignore_eos,
        "temperature": temperature, "extra_body": body, "timeout_s": timeout,
        "lengths_in": getattr(words, "unit", "tokens"),
        "tokenizer": str(tokenizer) if tokenizer else None,
        "loads": [load.label for load in loads],
    }  # fmt: skip

    async def go() -> Any:
        async with BenchClient(where) as client:
            return await run_bench(
                client, make_source, loads, RichProgress(), requests=count,
                duration_s=duration, warmup=warmup, seed=seed,
            )  # fmt: skip

    run = asyncio.run(go())
    raise typer.Exit(_finish(run, config, goal, out, plot))


def register(app: typer.Typer) -> None:
    """Add ``bench`` to the ``aiforge`` command."""
    app.command("bench")(bench_command)
