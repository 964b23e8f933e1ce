"""Routing policies on replicas with prefix caching: TTFT and throughput, in one run.

One ``aiforge serve`` (API keys, limits and metering on: the real request path) runs ONE
deployment of ``--replicas`` vLLM-CPU replicas of a random-weight model of Qwen3-0.6B's
real shape (``--load-format dummy``; aiforge's vLLM launch plan turns automatic prefix
caching on). A seeded multi-turn chat workload (:mod:`aiforge.bench.workload`, the one
``aiforge bench --workload chat`` sends): conversations
share a few long system prompts and grow turn by turn, each answer appended to the
history, ``--concurrency`` requests in flight, streamed with the ``openai`` client. Each
conversation waits a seeded random think time (exponential, mean ``--think-time``) before
each turn, as users do. Without it every conversation re-enters the queue in the same
order each turn, and with as many conversations as a multiple of the replica count round
robin sends each conversation to the same replica every turn: a benchmark artifact that
hands round robin perfect affinity, which no real traffic does.

``--kv-cache-blocks`` sizes every replica's KV cache (vLLM's ``--num-gpu-blocks-override``;
a block is 128 tokens on vLLM-CPU) so the workload can be run under cache pressure: more
system prompts and histories than one replica holds, the regime where where a prompt is
sent decides whether it is prefilled again.

For each policy (``--policies``, default round robin, least outstanding, prefix affinity),
and ``--rounds`` times over, the script:

1. switches the deployment's policy in place (``PATCH /admin/v1/deployments/NAME``; the
   replicas keep running);
2. warms each replica with a short unrelated request sent to it directly, then empties
   every replica's prefix cache (vLLM's ``POST /reset_prefix_cache``, served because the
   replicas run with ``VLLM_SERVER_DEV_MODE=1``; where a replica does not serve it, the
   deployment is scaled to 0 and back, which takes minutes);
3. runs the whole workload through the gateway and reads each replica's prefix-cache
   counters (vLLM's ``/metrics``) before and after.

Per policy it reports TTFT p50/p90/p99 (time to the first chunk carrying generated text),
end-to-end latency p50, output tokens/s, requests/s, errors, the replicas' prefix-cache
hit rate and how many requests each replica served, and the ratio prefix affinity /
round robin of TTFT p50 (the issue's target: at most 0.5). Results go to stdout as a
Markdown table and to ``--out`` as JSON.

It needs the machine to itself: it refuses to start when the 1-minute load average is
above ``--max-load`` (``--force`` overrides, and the load is recorded either way).

    .venv/bin/python benchmarks/routing.py --smoke --force       # tiny model, ~5 min
    .venv/bin/python benchmarks/routing.py --out routing.json    # the real run
    .venv/bin/python benchmarks/routing.py --plan                # workload size, no run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import openai
from openai.types.chat import ChatCompletionMessageParam
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from routing_service import (
    SERVED_NAME,
    Service,
    cpu_binding,
    deploy,
    read_counters,
    reset_prefix_caches,
    serving,
    set_policy,
    wait_ready,
    warm_up,
)
from routing_stats import (
    CacheCounters,
    RequestSample,
    render_table,
    summarize,
    ttft_ratio,
)

from aiforge.bench.workload import (
    ChatWorkload,
    ChatWorkloadSpec,
    Conversation,
    HFTokenizer,
    build_chat_workload,
    chat_messages,
)
from aiforge.engines.vllm import DEFAULT_KV_CACHE_GIB, TINY_VLLM_OVERRIDES
from aiforge.models.random_weights import QWEN3_0_6B, write_random_qwen3
from aiforge.testing.models import qwen3_tokenizer_dir

DEFAULT_THINK_TIME_S = 1.0
VLLM_CPU_BLOCK_TOKENS = 128
"""vLLM-CPU's default KV-cache block size (``vllm/platforms/cpu.py``)."""

DEFAULT_POLICIES = "round_robin,least_outstanding,prefix_affinity"
FULL = ChatWorkloadSpec()
SMOKE = ChatWorkloadSpec(
    conversations=4, turns=2, system_prompts=2, system_tokens=256,
    user_tokens_min=20, user_tokens_max=40, max_tokens=8,
)  # fmt: skip
REQUEST_TIMEOUT_S = 600.0

console = Console(stderr=True)


def say(line: str) -> None:
    console.print(f"[bold cyan]\\[routing][/] {line}", highlight=False)


# -- command line --------------------------------------------------------------------------


class _DefaultsShown(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default unless it has none (the workload's are in its help)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=_DefaultsShown,
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        help="tiny model and workload (4 conversations x 2 turns): checks that "
        "everything runs, in a few minutes; workload flags below still override",
    )
    p.add_argument(
        "--plan",
        action="store_true",
        help="print the workload's size, then exit",
    )
    p.add_argument(
        "--policies",
        default=DEFAULT_POLICIES,
        help="comma-separated routing policies, measured in this order",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="times the policies are measured in turn (samples are pooled)",
    )
    _workload_flags(p)
    _deployment_flags(p)
    _output_flags(p)
    return p.parse_args(argv)


def _workload_flags(parser: argparse.ArgumentParser) -> None:
    w = parser.add_argument_group("workload (defaults: the full run; --smoke shrinks them)")
    w.add_argument("--conversations", type=int, help=f"chats ({FULL.conversations})")
    w.add_argument("--turns", type=int, help=f"user turns per chat ({FULL.turns})")
    w.add_argument(
        "--system-prompts",
        type=int,
        help=f"distinct system prompts shared by the chats ({FULL.system_prompts})",
    )
    w.add_argument(
        "--system-tokens", type=int, help=f"tokens per system prompt ({FULL.system_tokens})"
    )
    w.add_argument(
        "--user-tokens",
        type=int,
        nargs=2,
        metavar=("MIN", "MAX"),
        help=f"tokens per user turn ({FULL.user_tokens_min} {FULL.user_tokens_max})",
    )
    w.add_argument(
        "--max-tokens", type=int, help=f"tokens generated per turn, ignore_eos ({FULL.max_tokens})"
    )
    w.add_argument("--concurrency", type=int, help="requests in flight (4; smoke 2)")
    w.add_argument(
        "--think-time",
        type=float,
        default=DEFAULT_THINK_TIME_S,
        metavar="S",
        help="mean seconds a conversation waits before each turn (exponential, seeded; "
        "0: none, every turn queues at once)",
    )
    w.add_argument("--seed", type=int, default=0, help="workload seed")


def _deployment_flags(parser: argparse.ArgumentParser) -> None:
    d = parser.add_argument_group("deployment")
    d.add_argument("--replicas", type=int, default=2, help="vLLM-CPU replicas")
    d.add_argument("--threads", type=int, default=1, help="CPU threads per replica")
    d.add_argument(
        "--layers",
        type=int,
        default=QWEN3_0_6B["num_hidden_layers"],
        help="decoder layers of the Qwen3-0.6B-shaped model (fewer: a shorter run with "
        "real-sized layers; say so when reporting)",
    )
    d.add_argument(
        "--dtype",
        default="auto",
        help="weights dtype (auto: the checkpoint's; bf16 full, float32 smoke)",
    )
    d.add_argument(
        "--max-model-len",
        type=int,
        help="context length (default: the workload's longest prompt, rounded up)",
    )
    d.add_argument(
        "--kv-cache-blocks",
        type=int,
        metavar="N",
        help="KV-cache blocks per replica (128 tokens each on vLLM-CPU; default: "
        f"{DEFAULT_KV_CACHE_GIB} GiB of it): small enough, it puts the cache under pressure",
    )
    d.add_argument(
        "--engine-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra vLLM argument, repeatable (--engine-arg=--max-num-seqs=8); "
        "prefix caching is already on in aiforge's vLLM launch plan",
    )
    d.add_argument(
        "--startup-timeout",
        type=float,
        default=1800.0,
        help="seconds to wait for the replicas to become ready",
    )
    d.add_argument(
        "--cache",
        type=Path,
        default=Path.home() / ".cache" / "aiforge" / "bench",
        help="where the model checkpoints are kept between runs",
    )


def _output_flags(parser: argparse.ArgumentParser) -> None:
    o = parser.add_argument_group("machine and output")
    o.add_argument(
        "--max-load",
        type=float,
        default=0.5,
        help="refuse to start above this 1-minute load average",
    )
    o.add_argument("--force", action="store_true", help="start even on a loaded machine")
    o.add_argument("--out", type=Path, help="write the results here as JSON")
    o.add_argument(
        "--keep",
        type=Path,
        help="keep the service's data dir (logs, database) here instead of a temporary one",
    )


def workload_spec(args: argparse.Namespace) -> ChatWorkloadSpec:
    """The workload the flags ask for: ``--smoke``'s or the full one, flags overriding."""
    base = SMOKE if args.smoke else FULL
    low, high = args.user_tokens or (base.user_tokens_min, base.user_tokens_max)
    return ChatWorkloadSpec(
        conversations=args.conversations or base.conversations,
        turns=args.turns or base.turns,
        system_prompts=args.system_prompts or base.system_prompts,
        system_tokens=args.system_tokens or base.system_tokens,
        user_tokens_min=low,
        user_tokens_max=high,
        max_tokens=args.max_tokens or base.max_tokens,
        seed=args.seed,
    )


def concurrency_of(args: argparse.Namespace) -> int:
    return int(args.concurrency or (2 if args.smoke else 4))


def context_length(args: argparse.Namespace, spec: ChatWorkloadSpec) -> int:
    """``--max-model-len``, or the longest prompt plus one answer rounded up to 512."""
    if args.max_model_len:
        return int(args.max_model_len)
    need = spec.max_prompt_tokens() + spec.max_tokens
    return -(-need // 512) * 512


# -- the machine and the model -------------------------------------------------------------


def check_load(max_load: float, force: bool) -> float:
    """The 1-minute load average; exits when it is above ``max_load`` unless ``force``."""
    load = os.getloadavg()[0]
    if load <= max_load:
        say(f"load average {load:.2f} at the start")
        return load
    warning = (
        f"the 1-minute load average is {load:.2f} (> {max_load}): other work shares this "
        "machine and will distort latencies"
    )
    if not force:
        console.print(f"[bold red]refusing to start:[/] {warning}. Use --force to run anyway.")
        raise SystemExit(2)
    console.print(f"[bold yellow]WARNING:[/] {warning}; running anyway (--force).")
    return load


async def settle_load(max_load: float, limit_s: float = 300.0) -> float:
    """Wait (up to ``limit_s``) for the start-up's CPU work to leave the 1-minute load
    average, so the measurement starts on a quiet machine; returns the load it starts at."""
    waited = 0.0
    while (load := os.getloadavg()[0]) > max_load and waited < limit_s:
        if waited % 30 == 0:
            say(f"waiting for the load average to settle: {load:.2f} > {max_load}")
        await asyncio.sleep(5.0)
        waited += 5.0
    say(f"load average {load:.2f} as the measurement starts")
    return load


def model_dir(cache: Path, smoke: bool, layers: int) -> Path:
    """The random-weight checkpoint, built once: Qwen3-0.6B's shape in bf16 (~1.2 GB) —
    with ``layers`` of its 28 decoder layers, each of the real size — or a tiny shape
    vLLM-CPU accepts for ``--smoke``. vLLM loads it with ``--load-format dummy``."""
    if smoke:
        path = cache / "qwen3-tiny-vllm-random"
        shape, dtype = TINY_VLLM_OVERRIDES, "float32"
    elif layers == QWEN3_0_6B["num_hidden_layers"]:
        path = cache / "qwen3-0.6b-random-bf16"  # shared with benchmarks/throughput.py
        shape, dtype = QWEN3_0_6B, "bfloat16"
    else:
        path = cache / f"qwen3-0.6b-{layers}-layers-random-bf16"
        shape, dtype = {**QWEN3_0_6B, "num_hidden_layers": layers}, "bfloat16"
    if not (path / "config.json").exists():
        say(f"building a random checkpoint in {path} (once)")
        write_random_qwen3(path, tokenizer_dir=qwen3_tokenizer_dir(), shape=shape, dtype=dtype)
    return path


# -- the workload --------------------------------------------------------------------------


@dataclass
class TurnResult:
    sample: RequestSample
    answer: str = ""


def _delta_text(chunk: Any) -> str:
    """Generated text in a stream chunk: content, or reasoning where vLLM's reasoning parser
    classed the (random) model's output as such."""
    if not chunk.choices:
        return ""
    delta = chunk.choices[0].delta
    extra = delta.model_extra or {}
    return str(delta.content or extra.get("reasoning_content") or extra.get("reasoning") or "")


async def one_turn(
    client: openai.AsyncOpenAI,
    workload: ChatWorkload,
    conversation: Conversation,
    answers: list[str],
) -> TurnResult:
    turn = len(answers)
    system = workload.system_prompts[conversation.system]
    messages = cast(
        "list[ChatCompletionMessageParam]", chat_messages(system, conversation, answers)
    )
    started = time.perf_counter()
    first: float | None = None
    parts: list[str] = []
    usage = None
    try:
        stream = await client.chat.completions.create(
            model=SERVED_NAME, messages=messages,
            max_tokens=workload.spec.max_tokens, temperature=0.0, stream=True,
            stream_options={"include_usage": True}, user=f"conversation-{conversation.id}",
            extra_body={"ignore_eos": True, "chat_template_kwargs": {"enable_thinking": False}},
        )  # fmt: skip
        async for chunk in stream:
            text = _delta_text(chunk)
            if text and first is None:
                first = time.perf_counter()
            parts.append(text)
            usage = chunk.usage or usage
    except openai.OpenAIError as error:
        sample = RequestSample(conversation.id, turn, None, None, error=str(error)[:200])
        return TurnResult(sample)
    ended = time.perf_counter()
    sample = RequestSample(
        conversation.id, turn,
        ttft_s=(first if first is not None else ended) - started, latency_s=ended - started,
        completion_tokens=usage.completion_tokens if usage else 0,
        prompt_tokens=usage.prompt_tokens if usage else 0,
    )  # fmt: skip
    return TurnResult(sample, "".join(parts))


async def run_workload(
    base_url: str, api_key: str, workload: ChatWorkload, concurrency: int,
    on_done: Callable[[RequestSample], None], think_time_s: float = 0.0,
) -> tuple[list[RequestSample], float]:  # fmt: skip
    """Every conversation, turn by turn, ``concurrency`` requests in flight; the samples
    and the wall time. Before each turn a conversation thinks for a seeded exponential
    time of mean ``think_time_s`` (outside its slot: others take it meanwhile). A failed
    turn still appends an (empty) answer, so the conversation goes on and every policy
    sends the same number of requests."""
    slots = asyncio.Semaphore(concurrency)
    samples: list[RequestSample] = []

    async def chat(client: openai.AsyncOpenAI, conversation: Conversation) -> None:
        answers: list[str] = []
        pauses = think_times(workload.spec.seed, conversation.id, think_time_s)
        for _ in conversation.user_turns:
            await asyncio.sleep(next(pauses))
            async with slots:
                result = await one_turn(client, workload, conversation, answers)
            answers.append(result.answer)
            samples.append(result.sample)
            on_done(result.sample)

    async with openai.AsyncOpenAI(
        base_url=f"{base_url}/v1", api_key=api_key, max_retries=0, timeout=REQUEST_TIMEOUT_S
    ) as client:
        started = time.perf_counter()
        await asyncio.gather(*(chat(client, c) for c in workload.conversations))
        wall = time.perf_counter() - started
    return samples, wall


def think_times(seed: int, conversation: int, mean_s: float) -> Iterator[float]:
    """The pauses before a conversation's turns: exponential with mean ``mean_s``, the same
    for every policy (seeded by workload seed and conversation); zeros if ``mean_s`` is 0."""
    rng = random.Random(f"{seed}:think:{conversation}")
    while True:
        yield rng.expovariate(1.0 / mean_s) if mean_s > 0 else 0.0


# -- one policy ------------------------------------------------------------------------------


@dataclass
class PolicyRun:
    policy: str
    samples: list[RequestSample] = field(default_factory=list)
    wall_s: float = 0.0
    deltas: list[CacheCounters] = field(default_factory=list)

    def add(self, samples: list[RequestSample], wall_s: float, deltas: list[CacheCounters]) -> None:
        self.samples += samples
        self.wall_s += wall_s
        self.deltas = (
            [a + b for a, b in zip(self.deltas, deltas, strict=True)] if self.deltas else deltas
        )


async def fresh_replicas(service: Service, args: argparse.Namespace) -> list[str]:
    """Ready replica URLs with empty prefix caches (reset, or restarted when it can't be)."""
    urls = [r["url"] for r in wait_ready(service, args.replicas, args.startup_timeout)]
    await warm_up(service, urls)
    if await reset_prefix_caches(urls):
        return urls
    say("the replicas do not serve /reset_prefix_cache: restarting them (scale 0, back)")
    service.admin("POST", "/scale", {"replicas": 0})
    wait_ready(service, 0, args.startup_timeout)
    service.admin("POST", "/scale", {"replicas": args.replicas})
    urls = [r["url"] for r in wait_ready(service, args.replicas, args.startup_timeout)]
    await warm_up(service, urls)
    return urls


async def measure(
    service: Service, policy: str, workload: ChatWorkload, args: argparse.Namespace, label: str
) -> tuple[list[RequestSample], float, list[CacheCounters]]:
    set_policy(service, policy)
    urls = await fresh_replicas(service, args)
    before = await read_counters(urls)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("errors {task.fields[errors]}"), TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, console=console) as bar:
        task = bar.add_task(label, total=workload.spec.requests, errors=0)
        errors = 0

        def done(sample: RequestSample) -> None:
            nonlocal errors
            errors += 0 if sample.ok else 1
            bar.update(task, advance=1, errors=errors)

        samples, wall = await run_workload(
            service.url, service.api_key, workload, concurrency_of(args), done, args.think_time
        )
    after = await read_counters(urls)
    return samples, wall, [b - a for a, b in zip(before, after, strict=True)]


# -- main ------------------------------------------------------------------------------------


def plan_lines(workload: ChatWorkload, tokenizer: HFTokenizer, args: argparse.Namespace) -> str:
    spec = workload.spec
    counts = workload.prompt_tokens(tokenizer)
    return (
        f"workload: {spec.conversations} conversations x {spec.turns} turns = {spec.requests} "
        f"requests per policy, {spec.system_prompts} system prompts of ~{spec.system_tokens} "
        f"tokens ({counts['system']} in all), user turns {spec.user_tokens_min}-"
        f"{spec.user_tokens_max} tokens ({counts['user']} in all), {spec.max_tokens} tokens "
        f"per answer, concurrency {concurrency_of(args)}, think time {args.think_time:g} s; "
        f"KV cache {kv_cache_label(args)} per replica; policies {args.policies} x "
        f"{args.rounds} round(s); max_model_len {context_length(args, spec)}"
    )


def kv_cache_label(args: argparse.Namespace) -> str:
    if args.kv_cache_blocks is None:
        return f"{DEFAULT_KV_CACHE_GIB} GiB"
    return f"{args.kv_cache_blocks} blocks ({args.kv_cache_blocks * VLLM_CPU_BLOCK_TOKENS} tokens)"


def kv_cache_args(args: argparse.Namespace) -> list[str]:
    if args.kv_cache_blocks is None:
        return []
    return [f"--num-gpu-blocks-override={args.kv_cache_blocks}"]


def report(
    args: argparse.Namespace, workload: ChatWorkload, load: float, runs: list[PolicyRun],
    bindings: list[str | None], model_name: str,
) -> dict[str, Any]:  # fmt: skip
    summaries = [summarize(r.policy, r.samples, r.wall_s, r.deltas) for r in runs]
    ratio = ttft_ratio(summaries)
    print(render_table(summaries))
    if ratio is not None:
        verdict = "met" if ratio <= 0.5 else "NOT met"
        print(f"\nprefix_affinity / round_robin TTFT p50: {ratio:.2f} (target <= 0.5: {verdict})")
    return {
        "load_average_at_measurement_start": load, "load_average_end": os.getloadavg()[0],
        "smoke": args.smoke, "model": model_name, "replicas": args.replicas,
        "threads": args.threads,
        "cpu_bindings": bindings, "kv_cache_gib_per_replica": DEFAULT_KV_CACHE_GIB,
        "kv_cache_blocks_per_replica": args.kv_cache_blocks, "think_time_s": args.think_time,
        "concurrency": concurrency_of(args), "rounds": args.rounds,
        "workload": asdict(workload.spec), "engine_args": args.engine_arg,
        "policies": [asdict(s) for s in summaries],
        "prefix_affinity_over_round_robin_ttft_p50": ratio,
        "samples": {r.policy: [asdict(s) for s in r.samples] for r in runs},
    }  # fmt: skip


def warn_shared_cpus(bindings: list[str | None]) -> None:
    known = [b for b in bindings if b is not None]
    if len(known) > 1 and len(set(known)) == 1:
        console.print(
            f"[bold yellow]WARNING:[/] every replica pins its threads to the same CPUs "
            f"({known[0]}): they compete for them while other CPUs idle."
        )


async def run(args: argparse.Namespace) -> dict[str, Any]:
    spec = workload_spec(args)
    tokenizer = HFTokenizer(qwen3_tokenizer_dir() / "tokenizer.json")
    workload = build_chat_workload(spec, tokenizer)
    say(plan_lines(workload, tokenizer, args))
    if args.plan:
        return {}
    load = check_load(args.max_load, args.force)
    model = model_dir(args.cache, args.smoke, args.layers)
    max_model_len = context_length(args, spec)
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    runs = {policy: PolicyRun(policy) for policy in policies}
    with serving(model, args.keep, say) as service:
        deploy(
            service, model=str(model), engine="vllm", replicas=args.replicas,
            policy=policies[0], max_model_len=max_model_len, dtype=args.dtype,
            threads=args.threads,
            engine_args=["--load-format", "dummy", *kv_cache_args(args), *args.engine_arg],
        )  # fmt: skip
        replicas = wait_ready(service, args.replicas, args.startup_timeout)
        bindings = [cpu_binding(r.get("pid")) for r in replicas]
        say(f"replicas ready; CPU bindings {bindings}")
        warn_shared_cpus(bindings)
        load = await settle_load(args.max_load)
        for round_ in range(args.rounds):
            for policy in policies:
                label = f"{policy} (round {round_ + 1}/{args.rounds})"
                say(f"{label}: switching policy, resetting prefix caches, warming up")
                samples, wall, deltas = await measure(service, policy, workload, args, label)
                runs[policy].add(samples, wall, deltas)
                say(f"{label}: {len(samples)} requests in {wall:.1f} s")
    return report(args, workload, load, list(runs.values()), bindings, model.name)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    results = asyncio.run(run(args))
    if args.out and results:
        args.out.write_text(json.dumps(results, indent=2))
        say(f"results written to {args.out}")


if __name__ == "__main__":
    main()
