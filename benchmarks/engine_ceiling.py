"""Each of aiforge's own engines against its ceiling, measured in one run.

On a random-weight model of Qwen3-0.6B's real shape (Q8_0 GGUF for llama.cpp, bf16 for
transformers; built once in ``--cache``), with the same thread count on both sides:

- ``ceiling`` runs in its own process, loaded once and told what to run over a pipe:
  *llama.cpp*: the bare batched ``llama_decode`` loop (``llama-batched-bench``'s loop: one
  batch of every prompt, then one token per sequence per step, greedy argmax in numpy,
  nothing else); *transformers*: plain ``model.generate`` (one batch of every stream; with
  ``--stagger``, static batches of whatever arrived while the previous batch ran);
- ``engine`` is an aiforge replica started with aiforge's own launch plan, driven over
  HTTP (``/v1/completions`` with the same token-id prompts, streamed, greedy, EOS ignored).

Ceiling and engine run alternately, ``--reps`` times per stream count, the order swapped
every repetition, with fresh random prompts each time (so the prefix cache gets no hits).
Reported per stream count: medians of tokens/s, CPU milliseconds per generated token (the
process's utime+stime, all threads: robust to background load, unlike tokens/s), the
median engine/ceiling ratio and the spread of the ratio across repetitions.

Refuses to start above a 1-minute load average of 0.5 unless ``--force``: tokens/s on a
shared machine measure the neighbours.

Run:  .venv/bin/python benchmarks/engine_ceiling.py --engine llamacpp --streams 1,8,16
      .venv/bin/python benchmarks/engine_ceiling.py --engine transformers --streams 1,8 \\
          --stagger 1.0
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import SERVED_NAME, gguf_model, hf_model, say, start_replica

from aiforge.config import Settings

MAX_LOAD = 0.5
VOCAB_SAMPLE = 100_000
"""Prompt tokens are drawn below this id (ordinary tokens of the Qwen3 vocabulary)."""


# -- workload --------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    streams: int
    tokens: int
    prompt_tokens: int
    stagger: float
    seed: int

    def prompts(self) -> list[list[int]]:
        rng = random.Random(self.seed)
        return [
            [rng.randrange(1000, VOCAB_SAMPLE) for _ in range(self.prompt_tokens)]
            for _ in range(self.streams)
        ]


def cpu_seconds(pid: int) -> float:
    """utime + stime of process ``pid``, all its threads, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- the ceilings (run inside the worker process) -----------------------------------------


class LlamaCeiling:
    """The bare batched decode loop on one llama.cpp context."""

    def __init__(self, model: Path, threads: int, max_streams: int, max_len: int) -> None:
        import llama_cpp as ll

        from aiforge.engines.llamacpp.runner import silence_llama_logs

        self.ll = ll
        silence_llama_logs()
        ll.llama_backend_init()
        self.model = ll.llama_model_load_from_file(
            str(model).encode(), ll.llama_model_default_params()
        )
        self.vocab = ll.llama_model_get_vocab(self.model)
        self.n_vocab = int(ll.llama_vocab_n_tokens(self.vocab))
        params = ll.llama_context_default_params()
        params.n_ctx = max_streams * max_len
        params.n_batch = params.n_ubatch = 512
        params.n_seq_max = max_streams
        params.n_threads = params.n_threads_batch = threads
        params.no_perf = True
        self.ctx = ll.llama_init_from_model(self.model, params)
        self.batch = ll.llama_batch_init(512, 0, 1)

    def _decode(self, entries: list[tuple[int, int, int, bool]]) -> None:
        batch = self.batch
        for i, (seq, token, pos, logits) in enumerate(entries):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, pos, 1
            batch.seq_id[i][0], batch.logits[i] = seq, logits
        batch.n_tokens = len(entries)
        if self.ll.llama_decode(self.ctx, batch) != 0:
            raise RuntimeError("llama_decode failed")

    def _argmax(self, rows: int) -> list[int]:
        import numpy as np

        ptr = self.ll.llama_get_logits(self.ctx)
        logits = np.ctypeslib.as_array(ptr, shape=(rows, self.n_vocab))
        picked: list[int] = logits.argmax(axis=1).tolist()
        return picked

    def run(self, work: Workload) -> int:
        self.ll.llama_memory_clear(self.ll.llama_get_memory(self.ctx), True)
        prompts = work.prompts()
        entries = [
            (s, t, p, p == len(prompt) - 1)
            for s, prompt in enumerate(prompts)
            for p, t in enumerate(prompt)
        ]
        for start in range(0, len(entries), 512):
            self._decode(entries[start : start + 512])
        last = self._argmax(work.streams)  # the prompts' last rows, in sequence order
        n = work.prompt_tokens
        for step in range(work.tokens - 1):
            self._decode([(s, last[s], n + step, True) for s in range(work.streams)])
            last = self._argmax(work.streams)
        return work.streams * work.tokens


class GenerateCeiling:
    """Plain Hugging Face ``model.generate``: static batches."""

    def __init__(self, model: Path, threads: int) -> None:
        from aiforge.engines.transformers.loading import load_model

        self.loaded = load_model(model, dtype="bfloat16", threads=threads)

    def _generate(self, prompts: list[list[int]], tokens: int) -> int:
        import torch

        ids = torch.tensor(prompts)
        with torch.inference_mode():
            out = self.loaded.model.generate(
                ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens,
                min_new_tokens=tokens, do_sample=False, pad_token_id=0,
            )  # fmt: skip
        return int(out.shape[1] - ids.shape[1]) * len(prompts)

    def run(self, work: Workload) -> int:
        """Each ``generate`` takes every request that has arrived (all at once without a
        stagger); the clock starts at the first arrival."""
        prompts, started = work.prompts(), time.perf_counter()
        served = generated = 0
        while served < work.streams:
            now = time.perf_counter() - started
            arrived = (
                work.streams
                if work.stagger <= 0
                else min(work.streams, int(now / work.stagger) + 1)
            )
            if arrived == served:
                time.sleep(served * work.stagger - now)
                continue
            generated += self._generate(prompts[served:arrived], work.tokens)
            served = arrived
        return generated


def worker_main(args: argparse.Namespace) -> None:
    """The ceiling process: one JSON workload per stdin line, one JSON result per line."""
    ceiling: LlamaCeiling | GenerateCeiling
    if args.engine == "llamacpp":
        max_streams = max(int(s) for s in args.streams.split(","))
        ceiling = LlamaCeiling(args.model, args.threads, max_streams, 2048)
    else:
        ceiling = GenerateCeiling(args.model, args.threads)
    ceiling.run(Workload(1, 4, 8, 0.0, -1))  # warm-up
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        work = Workload(**json.loads(line))
        cpu, started = os.times(), time.perf_counter()
        generated = ceiling.run(work)
        elapsed, end = time.perf_counter() - started, os.times()
        used = (end.user - cpu.user) + (end.system - cpu.system)
        print(json.dumps({"tokens": generated, "seconds": elapsed, "cpu": used}), flush=True)


class CeilingProcess:
    """The parent's handle on the worker process."""

    def __init__(self, args: argparse.Namespace, model: Path) -> None:
        argv = [
            sys.executable, __file__, "--worker", "--engine", args.engine, "--model", str(model),
            "--threads", str(args.threads), "--streams", args.streams,
        ]  # fmt: skip
        env = {**os.environ, **ceiling_env(args.engine, model, args.threads)}
        self.process = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        self._read()

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the ceiling worker died; see its stderr above")
        result: dict[str, Any] = json.loads(line)
        return result

    def run(self, work: Workload) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(work.__dict__) + "\n")
        self.process.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def ceiling_env(engine: str, model: Path, threads: int) -> dict[str, str]:
    """The environment aiforge's launch plan gives the engine, so both sides run alike."""
    from aiforge.engines.base import ReplicaSpec
    from aiforge.engines.registry import make_engine

    spec = ReplicaSpec(model_path=model, served_model_name=SERVED_NAME, port=1, threads=threads)
    return dict(make_engine(engine, Settings()).launch_plan(spec).env)


# -- the engine over HTTP -------------------------------------------------------------------


async def engine_run(url: str, pid: int, work: Workload) -> dict[str, Any]:
    prompts = work.prompts()

    async def one(client: openai.AsyncOpenAI, i: int) -> int:
        await asyncio.sleep(i * work.stagger)
        stream = await client.completions.create(
            model=SERVED_NAME, prompt=prompts[i], max_tokens=work.tokens, temperature=0.0,
            stream=True, stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )  # fmt: skip
        generated = 0
        async for chunk in stream:
            if chunk.usage is not None:
                generated = chunk.usage.completion_tokens
        return generated

    async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0) as c:
        cpu, started = cpu_seconds(pid), time.perf_counter()
        counts = await asyncio.gather(*(one(c, i) for i in range(work.streams)))
        elapsed, used = time.perf_counter() - started, cpu_seconds(pid) - cpu
    if min(counts) != work.tokens:
        raise RuntimeError(f"expected {work.tokens} tokens per stream, got {counts}")
    return {"tokens": sum(counts), "seconds": elapsed, "cpu": used}


# -- the comparison ---------------------------------------------------------------------------


@dataclass
class Row:
    streams: int
    ceiling: list[dict[str, Any]] = field(default_factory=list)
    engine: list[dict[str, Any]] = field(default_factory=list)

    @staticmethod
    def tok_s(runs: list[dict[str, Any]]) -> float:
        return statistics.median(r["tokens"] / r["seconds"] for r in runs)

    @staticmethod
    def cpu_ms(runs: list[dict[str, Any]]) -> float:
        return statistics.median(1000 * r["cpu"] / r["tokens"] for r in runs)

    def ratios(self) -> list[float]:
        return [
            (e["tokens"] / e["seconds"]) / (c["tokens"] / c["seconds"])
            for c, e in zip(self.ceiling, self.engine, strict=True)
        ]


def report(rows: list[Row], args: argparse.Namespace) -> str:
    ceiling = "bare llama_decode loop" if args.engine == "llamacpp" else "model.generate"
    stagger = f", arrivals {args.stagger:g}s apart" if args.stagger > 0 else ""
    lines = [
        f"engine {args.engine} vs {ceiling}; {args.threads} threads, {args.tokens} tokens, "
        f"{args.prompt_tokens}-token prompts{stagger}, {args.reps} reps interleaved",
        "| streams | ceiling tok/s | engine tok/s | engine / ceiling (spread) "
        "| ceiling CPU-ms/tok | engine CPU-ms/tok |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        ratios = row.ratios()
        lines.append(
            f"| {row.streams} | {Row.tok_s(row.ceiling):.1f} | {Row.tok_s(row.engine):.1f} "
            f"| {statistics.median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f}) "
            f"| {Row.cpu_ms(row.ceiling):.1f} | {Row.cpu_ms(row.engine):.1f} |"
        )
    return "\n".join(lines)


async def compare(args: argparse.Namespace, work_dir: Path) -> list[Row]:
    model = gguf_model(args.cache) if args.engine == "llamacpp" else hf_model(args.cache)
    settings = Settings(data_dir=work_dir)
    say(f"starting the ceiling worker and an aiforge {args.engine} replica of {model.name}")
    ceiling = CeilingProcess(args, model)
    replica = await start_replica(args.engine, settings, model, args.threads)
    pid = replica.process.pid
    rows = [Row(int(s)) for s in args.streams.split(",")]
    try:
        await engine_run(replica.url, pid, Workload(1, 4, 8, 0.0, -1))  # warm-up
        for rep in range(args.reps):
            for row in rows:
                stagger = args.stagger if row.streams > 1 else 0.0
                seed = rep * 1000 + row.streams
                work = Workload(row.streams, args.tokens, args.prompt_tokens, stagger, seed)
                order = ("ceiling", "engine") if rep % 2 == 0 else ("engine", "ceiling")
                for side in order:
                    if side == "ceiling":
                        row.ceiling.append(ceiling.run(work))
                    else:
                        row.engine.append(await engine_run(replica.url, pid, work))
                c, e = row.ceiling[-1], row.engine[-1]
                say(
                    f"rep {rep + 1}/{args.reps}, {row.streams} streams: ceiling "
                    f"{c['tokens'] / c['seconds']:.1f} tok/s, engine "
                    f"{e['tokens'] / e['seconds']:.1f} tok/s, load {os.getloadavg()[0]:.1f}"
                )
    finally:
        replica.stop()
        ceiling.close()
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", choices=("llamacpp", "transformers"), required=True)
    parser.add_argument("--streams", default="1,8", help="stream counts, comma-separated")
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per stream")
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--stagger", type=float, default=0.0,
                        help="seconds between arrivals (streams > 1)")  # fmt: skip
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache/aiforge/bench")
    parser.add_argument("--json", type=Path, help="write the raw runs here")
    parser.add_argument("--force", action="store_true", help="run even on a busy machine")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        worker_main(args)
        return
    load = os.getloadavg()[0]
    if load > MAX_LOAD and not args.force:
        sys.exit(f"load average {load:.1f} > {MAX_LOAD}: the figures would measure the "
                 "neighbours (--force to run anyway)")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="aiforge-ceiling-") as tmp:
        rows = asyncio.run(compare(args, Path(tmp)))
    print(report(rows, args))
    if args.json:
        payload = [{"streams": r.streams, "ceiling": r.ceiling, "engine": r.engine} for r in rows]
        args.json.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
