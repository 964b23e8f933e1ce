"""The gateway against the LiteLLM proxy, and both against no gateway, on one instant replica.

One run sets up everything it compares:

* an instant fake replica in its own process (:mod:`gateway_wire`: a fixed chat completion,
  or a 16-chunk SSE stream);
* **direct**: the client talks to the replica;
* **aiforge**: ``aiforge serve --replica-url`` with the platform on — an API key with every
  limit set (requests and tokens per minute, concurrency, day and month budgets, on the key
  and its project) and the usage ledger journaling every request and flushing to SQLite;
* **litellm**: the LiteLLM proxy (``litellm[proxy]`` pinned to :data:`LITELLM_VERSION`,
  installed by this script into a venv of its own under ``~/.cache/aiforge-bench``, never
  into aiforge's), one worker, a master key, the local cost map, no database.

For concurrency 1, 16 and 64, not streamed and streamed, the targets take turns in rounds
(direct, aiforge, litellm, direct, ...) so machine noise hits all alike; the client is one
raw keep-alive socket per concurrent request (no HTTP library in the measurement). It
reports latency p50/p99 from request to the answer's last byte, the latency each gateway
adds to direct's at the same percentile, requests/s, and each gateway process's CPU time
per request (``/proc``: user + system, the process and its children) — the cost that sets
both added latency and throughput once the machine is saturated. It also checks that a
stream through aiforge is byte for byte what the replica sent the client directly.

It refuses to start when the 1-minute load average is above 0.5 (``--force`` to run
anyway, e.g. to read CPU per request, which load does not skew as it skews wall time):

    .venv/bin/python benchmarks/gateway_vs_litellm.py --requests 2000 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from gateway_latency import platform_key, wait_for_key
from gateway_wire import MODEL, Connection, request_body, tree_cpu_seconds

from aiforge.cluster.network import free_port
from aiforge.testing.server import RemoteAiforgeServer

LITELLM_VERSION = "1.108.7"
LITELLM_VENV = Path.home() / ".cache" / "aiforge-bench" / f"litellm-{LITELLM_VERSION}"
MAX_LOAD = 0.5
PATH = "/v1/chat/completions"
WIRE = Path(__file__).with_name("gateway_wire.py")


@dataclass(frozen=True)
class Target:
    name: str
    url: str
    key: str | None
    pid: int | None
    """The process whose CPU is counted (None: no gateway)."""


@dataclass
class Cell:
    """One target at one concurrency, streamed or not, over every round."""

    latencies: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    cpu_s: float = 0.0


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100), linear between ranks as numpy's default."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


async def run_batch(target: Target, body: bytes, requests: int, concurrency: int) -> list[float]:
    """``requests`` requests over ``concurrency`` keep-alive connections; their latencies."""

    async def worker(count: int) -> list[float]:
        async with Connection(target.url, PATH, body, target.key) as connection:
            return [(await connection.time_one())[0] for _ in range(count)]

    shares = [requests // concurrency + (i < requests % concurrency) for i in range(concurrency)]
    results = await asyncio.gather(*(worker(n) for n in shares if n))
    return [sample for result in results for sample in result]


async def measure_cell(
    targets: list[Target], body: bytes, requests: int, concurrency: int, rounds: int
) -> dict[str, Cell]:
    """Every target at one load, interleaved over ``rounds`` (after a warm-up each)."""
    cells = {t.name: Cell() for t in targets}
    per_round = max(concurrency, requests // rounds)
    for target in targets:
        await run_batch(target, body, min(per_round, 200), concurrency)
    for _ in range(rounds):
        for target in targets:
            cpu = tree_cpu_seconds(target.pid) if target.pid else 0.0
            start = time.perf_counter()
            cells[target.name].latencies += await run_batch(target, body, per_round, concurrency)
            cells[target.name].wall_s += time.perf_counter() - start
            if target.pid:
                cells[target.name].cpu_s += tree_cpu_seconds(target.pid) - cpu
    return cells


def summarize(cells: dict[str, Cell]) -> list[dict[str, float | str]]:
    """Rows of p50/p99 (ms), added p50/p99 against ``direct``, req/s and CPU ms per request."""
    direct = cells.get("direct")
    base50 = percentile(direct.latencies, 50) if direct else 0.0
    base99 = percentile(direct.latencies, 99) if direct else 0.0
    rows: list[dict[str, float | str]] = []
    for name, cell in cells.items():
        n = len(cell.latencies)
        p50, p99 = percentile(cell.latencies, 50), percentile(cell.latencies, 99)
        rows.append({
            "target": name, "requests": n,
            "p50_ms": p50 * 1e3, "p99_ms": p99 * 1e3,
            "added_p50_ms": (p50 - base50) * 1e3, "added_p99_ms": (p99 - base99) * 1e3,
            "req_per_s": n / cell.wall_s if cell.wall_s else 0.0,
            "cpu_ms_per_request": cell.cpu_s * 1e3 / n if name != "direct" else 0.0,
        })  # fmt: skip
    return rows


def render(title: str, rows: list[dict[str, float | str]]) -> str:
    lines = [
        f"\n{title}",
        "| target | p50 ms | p99 ms | added p50 ms | added p99 ms | req/s | gateway CPU ms/req |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        cpu = "–" if r["target"] == "direct" else f"{r['cpu_ms_per_request']:.3f}"
        added = "–" if r["target"] == "direct" else f"{r['added_p50_ms']:.3f}"
        added99 = "–" if r["target"] == "direct" else f"{r['added_p99_ms']:.3f}"
        lines.append(f"| {r['target']} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {added} "
                     f"| {added99} | {r['req_per_s']:.0f} | {cpu} |")  # fmt: skip
    return "\n".join(lines)


# -- what runs ----------------------------------------------------------------------------


@contextlib.contextmanager
def replica_process() -> Iterator[str]:
    """The instant fake replica in a process of its own; yields its URL."""
    process = subprocess.Popen([sys.executable, str(WIRE)], stdout=subprocess.PIPE,
                               start_new_session=True)  # fmt: skip
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode()
        if not line.startswith("listening "):
            raise RuntimeError("the fake replica did not start")
        yield f"http://127.0.0.1:{int(line.split()[1])}"
    finally:
        _stop_group(process)


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextlib.contextmanager
def aiforge_gateway(
    replica_url: str, data_dir: Path, *, name: str = "aiforge", source: Path | None = None
) -> Iterator[Target]:
    """``aiforge serve`` with auth, every limit and the usage ledger on (``source``: run the
    ``aiforge`` package from that ``src`` directory instead, e.g. another checkout's)."""
    env = {} if source is None else {"PYTHONPATH": str(source.resolve())}
    server = RemoteAiforgeServer(MODEL, serve_args=["--replica-url", replica_url], env=env,
                                 data_dir=data_dir, startup_timeout_s=180.0)  # fmt: skip
    server.start()
    try:
        key = platform_key(server)
        wait_for_key(server.url, key)
        assert server.process is not None
        yield Target(name, server.url, key, server.process.pid)
    finally:
        server.stop()


def ensure_litellm(venv: Path) -> Path:
    """The ``litellm`` command of a venv holding ``litellm[proxy]==LITELLM_VERSION``, made
    (with this Python) and filled on first use."""
    command = venv / "bin" / "litellm"
    marker = venv / f".litellm-{LITELLM_VERSION}"
    if command.exists() and marker.exists():
        return command
    print(f"installing litellm[proxy]=={LITELLM_VERSION} into {venv} (once)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, f"litellm[proxy]=={LITELLM_VERSION}"], check=True)
    marker.touch()
    return command


@contextlib.contextmanager
def litellm_proxy(command: Path, replica_url: str, work: Path) -> Iterator[Target]:
    """The LiteLLM proxy in front of the replica (one worker, master key, no database)."""
    config = work / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{MODEL}\n"
        f"      api_base: {replica_url}/v1\n"
        "      api_key: sk-replica\n"
        "general_settings:\n"
        "  master_key: os.environ/LITELLM_MASTER_KEY\n"
    )
    master = f"sk-{secrets.token_hex(24)}"
    port = free_port("127.0.0.1")
    env = {**os.environ, "LITELLM_MASTER_KEY": master, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
           "LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False"}  # fmt: skip
    argv = [str(command), "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
            "--num_workers", "1"]  # fmt: skip
    with (work / "litellm.log").open("wb") as log:
        process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url, master, process, work / "litellm.log")
        yield Target("litellm", url, master, process.pid)
    finally:
        _stop_group(process)


def _wait_ready(url: str, key: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 240.0
    with httpx.Client(timeout=10.0) as http:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"litellm exited:\n{log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                answer = http.post(url + PATH, content=request_body(stream=False),
                                   headers={"authorization": f"Bearer {key}",
                                            "content-type": "application/json"})  # fmt: skip
                if answer.status_code == 200:
                    return
            time.sleep(0.5)
    raise RuntimeError(f"litellm never answered:\n{log.read_text()[-3000:]}")


async def stream_passthrough(direct: Target, gateway: Target) -> bool:
    """Whether a stream through ``gateway`` carries exactly the bytes the replica sent."""
    body = request_body(stream=True)
    async with Connection(direct.url, PATH, body, None) as connection:
        expected = (await connection.time_one())[1]
    async with Connection(gateway.url, PATH, body, gateway.key) as connection:
        received = (await connection.time_one())[1]
    return received == expected


async def run(args: argparse.Namespace, targets: list[Target]) -> dict[str, object]:
    results: dict[str, object] = {"machine": {"cpus": os.cpu_count(),
                                              "load_at_start": os.getloadavg()[0]}}  # fmt: skip
    direct = next(t for t in targets if t.name == "direct")
    for gateway in targets:
        if gateway.name.startswith("aiforge"):
            identical = await stream_passthrough(direct, gateway)
            results[f"{gateway.name}_stream_byte_identical"] = identical
            print(f"{gateway.name}: stream byte-for-byte identical to direct: {identical}")
    for stream in args.stream:
        for concurrency in args.concurrency:
            body = request_body(stream=stream)
            cells = await measure_cell(targets, body, args.requests, concurrency, args.rounds)
            rows = summarize(cells)
            title = f"{'streamed' if stream else 'not streamed'}, concurrency {concurrency}"
            print(render(title, rows), flush=True)
            results[title] = rows
    results["load_at_end"] = os.getloadavg()[0]
    return results


def _event_loop_run(main: Coroutine[Any, Any, dict[str, object]]) -> dict[str, object]:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="per target and cell")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per cell")
    parser.add_argument("--concurrency", type=lambda s: [int(c) for c in s.split(",")],
                        default=[1, 16, 64])  # fmt: skip
    parser.add_argument("--stream", type=lambda s: [{"no": False, "yes": True}[v]
                                                    for v in s.split(",")],
                        default=[False, True], help="no,yes")  # fmt: skip
    parser.add_argument("--targets", default="aiforge,litellm", help="gateways besides direct")
    parser.add_argument(
        "--baseline-src", type=Path, help="also measure aiforge run from this src dir"
    )
    parser.add_argument("--litellm-venv", type=Path, default=LITELLM_VENV)
    parser.add_argument("--json", type=Path, help="write every row here")
    parser.add_argument("--force", action="store_true", help=f"run above load {MAX_LOAD}")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    if load > MAX_LOAD and not args.force:
        sys.exit(f"load average {load:.2f} > {MAX_LOAD}: the machine is busy (--force to run)")
    gateways = [name for name in args.targets.split(",") if name]
    litellm = ensure_litellm(args.litellm_venv) if "litellm" in gateways else None
    with (
        tempfile.TemporaryDirectory(prefix="aiforge-bench-") as tmp,
        replica_process() as url,
        contextlib.ExitStack() as stack,
    ):
        targets = [Target("direct", url, None, None)]
        if "aiforge" in gateways:
            targets.append(stack.enter_context(aiforge_gateway(url, Path(tmp) / "aiforge")))
        if args.baseline_src is not None:
            baseline = aiforge_gateway(url, Path(tmp) / "baseline", name="aiforge-baseline",
                                       source=args.baseline_src)  # fmt: skip
            targets.append(stack.enter_context(baseline))
        if litellm is not None:
            targets.append(stack.enter_context(litellm_proxy(litellm, url, Path(tmp))))
        results = _event_loop_run(run(args, targets))
    if args.json:
        args.json.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    print(f"\nload average at the end: {results['load_at_end']:.2f}")


if __name__ == "__main__":
    main()
