"""Throughput of each engine, 1 stream vs N concurrent, and through the gateway vs direct.

On a random-weight model of Qwen3-0.6B's real shape (a random model of the real shape costs
exactly what the real one costs per token), for each engine this script:

1. starts one replica with aiforge's own launch plan for that engine;
2. measures one stream, then ``--streams`` concurrent streams (aggregate tokens/s), greedy
   with ``ignore_eos`` so every request generates exactly ``--tokens`` tokens;
3. starts ``aiforge serve --replica-url`` in front of that replica (with API keys, limits and
   metering on, i.e. the real request path) and measures the same concurrent load through
   the gateway and directly, interleaved, reporting gateway / direct.

Run:  .venv/bin/python benchmarks/throughput.py --engines transformers,llamacpp,vllm
Results are printed as a Markdown table and written as JSON (``--json``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import openai

from aiforge.cluster.runtimes.local import LocalReplicaProcess, start_replica_process
from aiforge.config import Settings
from aiforge.engines.base import ReplicaSpec
from aiforge.engines.registry import make_engine
from aiforge.models.random_weights import QWEN3_0_6B, copy_tokenizer, write_random_qwen3
from aiforge.testing.models import qwen3_tokenizer_dir
from aiforge.testing.server import free_port

PROMPT = "Write a long story about a lighthouse keeper who finds a map in a bottle."
SERVED_NAME = "qwen3-0.6b-random"


def say(line: str) -> None:
    print(f"[bench] {line}", file=sys.stderr, flush=True)


@dataclass
class EngineResult:
    engine: str
    single_tok_s: float
    concurrent_tok_s: float
    streams: int
    gateway_tok_s: list[float] = field(default_factory=list)
    direct_tok_s: list[float] = field(default_factory=list)

    @property
    def batching_ratio(self) -> float:
        return self.concurrent_tok_s / self.single_tok_s

    @property
    def gateway_ratio(self) -> float:
        return statistics.median(self.gateway_tok_s) / statistics.median(self.direct_tok_s)


# -- model artifacts ----------------------------------------------------------------


def hf_model(cache: Path) -> Path:
    """The Qwen3-0.6B-shaped random checkpoint in bf16 (~1.2 GB), built once."""
    path = cache / "qwen3-0.6b-random-bf16"
    if not (path / "config.json").exists():
        say(f"building a random Qwen3-0.6B-shaped checkpoint in {path} (once)")
        write_random_qwen3(path, tokenizer_dir=qwen3_tokenizer_dir(), shape=QWEN3_0_6B)
    return path


def gguf_model(cache: Path) -> Path:
    """The same shape as a Q8_0 GGUF (~650 MB) with the tokenizer beside it, built once."""
    from aiforge.testing.gguf import random_qwen3_gguf

    folder = cache / "qwen3-0.6b-random-q8_0"
    path = folder / "model.gguf"
    if not path.exists():
        say(f"building a random Qwen3-0.6B-shaped Q8_0 GGUF in {folder} (once)")
        folder.mkdir(parents=True, exist_ok=True)
        copy_tokenizer(qwen3_tokenizer_dir(), folder)
        random_qwen3_gguf(path, shape=QWEN3_0_6B, dtype="q8_0")
    return path


# -- load generation -------------------------------------------------------------------


async def one_stream(client: openai.AsyncOpenAI, tokens: int) -> int:
    stream = await client.chat.completions.create(
        model=SERVED_NAME,
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=tokens,
        temperature=0.0,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True, "chat_template_kwargs": {"enable_thinking": False}},
    )
    generated = 0
    async for chunk in stream:
        if chunk.usage is not None:
            generated = chunk.usage.completion_tokens
    return generated


async def aggregate_tok_s(base_url: str, api_key: str, streams: int, tokens: int) -> float:
    """Tokens per second summed over ``streams`` concurrent greedy streams."""
    async with openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0) as client:
        started = time.perf_counter()
        counts = await asyncio.gather(*(one_stream(client, tokens) for _ in range(streams)))
        elapsed = time.perf_counter() - started
    if min(counts) != tokens:
        raise RuntimeError(f"expected {tokens} tokens per stream, got {counts}")
    return sum(counts) / elapsed


# -- processes ---------------------------------------------------------------------------


async def start_replica(
    engine_name: str, settings: Settings, model_path: Path, threads: int
) -> LocalReplicaProcess:
    engine = make_engine(engine_name, settings)
    engine.prepare(say)
    port = free_port()
    spec = ReplicaSpec(
        model_path=model_path,
        served_model_name=SERVED_NAME,
        port=port,
        max_model_len=2048,
        threads=threads,
        load_format="dummy" if engine_name == "vllm" else None,
    )
    return await start_replica_process(
        engine.launch_plan(spec), replica_id=engine_name, url=f"http://127.0.0.1:{port}",
        log_dir=settings.data_dir / "logs", progress=say,
    )  # fmt: skip


@contextmanager
def gateway(replica_url: str, data_dir: Path, admin_key: str) -> Iterator[str]:
    """``aiforge serve`` attached to the replica, with keys, limits and metering on."""
    port = free_port()
    env = {**os.environ, "AIFORGE_ADMIN_KEY": admin_key, "PYTHONUNBUFFERED": "1"}
    argv = [
        sys.executable, "-m", "aiforge.cli", "serve", "--replica-url", replica_url,
        "--served-model-name", SERVED_NAME, "--port", str(port), "--data-dir", str(data_dir),
    ]  # fmt: skip
    data_dir.mkdir(parents=True, exist_ok=True)
    log = (data_dir / "gateway.log").open("wb")
    process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"gateway exited; see {data_dir / 'gateway.log'}")
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        else:
            raise RuntimeError("gateway did not become healthy in 120 s")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


# -- one engine ----------------------------------------------------------------------------


async def bench_engine(
    engine_name: str, cache: Path, args: argparse.Namespace, work: Path
) -> EngineResult:
    model_path = gguf_model(cache) if engine_name == "llamacpp" else hf_model(cache)
    settings = Settings(data_dir=work / engine_name)
    say(f"{engine_name}: starting a replica of {model_path.name}")
    replica = await start_replica(engine_name, settings, model_path, args.threads)
    try:
        direct = f"{replica.url}/v1"
        await aggregate_tok_s(direct, "unused", 1, 8)  # warm-up
        single = await aggregate_tok_s(direct, "unused", 1, args.tokens)
        say(f"{engine_name}: 1 stream {single:.1f} tok/s")
        concurrent = await aggregate_tok_s(direct, "unused", args.streams, args.tokens)
        say(f"{engine_name}: {args.streams} streams {concurrent:.1f} tok/s")
        result = EngineResult(engine_name, single, concurrent, args.streams)
        admin_key = "sk-bench-" + secrets.token_urlsafe(24)
        with gateway(replica.url, work / f"{engine_name}-gateway", admin_key) as url:
            await aggregate_tok_s(f"{url}/v1", admin_key, 1, 8)  # warm-up
            for round_ in range(args.rounds):
                result.direct_tok_s.append(
                    await aggregate_tok_s(direct, "unused", args.streams, args.tokens)
                )
                result.gateway_tok_s.append(
                    await aggregate_tok_s(f"{url}/v1", admin_key, args.streams, args.tokens)
                )
                say(
                    f"{engine_name}: round {round_ + 1}/{args.rounds}: direct "
                    f"{result.direct_tok_s[-1]:.1f}, gateway {result.gateway_tok_s[-1]:.1f} tok/s"
                )
        return result
    finally:
        replica.stop()


def report(results: list[EngineResult]) -> str:
    lines = [
        "| engine | 1 stream tok/s | N streams tok/s | N / 1 | direct tok/s | gateway tok/s "
        "| gateway / direct |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r.engine} | {r.single_tok_s:.1f} | {r.concurrent_tok_s:.1f} (N={r.streams}) "
            f"| {r.batching_ratio:.2f} | {statistics.median(r.direct_tok_s):.1f} "
            f"| {statistics.median(r.gateway_tok_s):.1f} | {r.gateway_ratio:.3f} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", default="transformers,llamacpp,vllm")
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per stream")
    parser.add_argument("--streams", type=int, default=8, help="concurrent streams")
    parser.add_argument("--rounds", type=int, default=3, help="gateway/direct rounds")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument(
        "--cache", type=Path, default=Path.home() / ".cache" / "aiforge" / "bench",
        help="where the random checkpoints are kept between runs",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    return parser.parse_args(argv)


async def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="aiforge-bench-") as tmp:
        for name in args.engines.split(","):
            results.append(await bench_engine(name.strip(), args.cache, args, Path(tmp)))
    print(report(results))
    if args.json:
        payload = [
            {**asdict(r), "batching_ratio": r.batching_ratio, "gateway_ratio": r.gateway_ratio}
            for r in results
        ]
        args.json.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
