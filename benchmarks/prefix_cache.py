"""Prefix caching in aiforge's own engines: time to first token of a chat's second turn.

For each engine (transformers, llama.cpp), on a random-weight model of Qwen3-0.6B's real
shape (it costs per token exactly what the real one costs), this script starts one replica
with the prefix cache on and one with it off (``--no-prefix-cache``), one after the other,
and in each runs ``--rounds`` two-turn chats. Every chat opens with its own system prompt
of ``--prefix-tokens`` tokens (a fresh one per round, so no round reuses another's):

* turn 1: the system prompt and a question; the answer streams (``--answer-tokens``);
* turn 2: the same system prompt, question and answer, and a second question.

TTFT is the time from sending a request to its first chunk carrying text or a finish
reason (the replica sends the role chunk at once, before any token, so that one is
skipped; a token that ends mid-character shows with the next one). The headline is
turn-2 TTFT / turn-1 TTFT with the cache on (issue 9's target: at most 0.2 with a
2,000-token shared prefix); the same ratio with the cache off, and turn-2 TTFT off / on,
show what the cache changes. ``cached`` is ``usage.prompt_tokens_details.cached_tokens``
of turn 2 as the replica reports it.

It needs the machine to itself: it refuses to start when the 1-minute load average is
above 0.5 (``--force`` runs anyway, for a smoke test; such figures are not to publish).

Run:    .venv/bin/python benchmarks/prefix_cache.py
Smoke:  .venv/bin/python benchmarks/prefix_cache.py --smoke --force   (tiny models, ~1 min)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

MAX_LOAD = 0.5
SERVED_NAME = "qwen3-0.6b-random"
TARGET_RATIO = 0.2
WORDS = (
    "river", "lantern", "harbor", "granite", "orchard", "compass", "meadow", "signal",
    "copper", "willow", "beacon", "thunder", "canvas", "silver", "garden", "anchor",
    "marble", "falcon", "ember", "quartz", "valley", "cedar", "ribbon", "glacier",
    "saddle", "timber", "velvet", "prairie", "cobalt", "meridian", "archive", "ledger",
)  # fmt: skip


def say(line: str) -> None:
    print(f"[prefix-cache] {line}", file=sys.stderr, flush=True)


# -- pure parts ---------------------------------------------------------------------------


def system_prompt(tokenizer: Any, tokens: int, seed: int) -> str:
    """A system prompt of about ``tokens`` tokens, different for every ``seed``."""
    rng = random.Random(seed)
    words = [f"Document {seed}."]
    text = ""
    while True:
        words.extend(rng.choice(WORDS) for _ in range(64))
        text = " ".join(words)
        ids = tokenizer.encode(text, add_special_tokens=False)
        if len(ids) >= tokens:
            return str(tokenizer.decode(ids[:tokens]))


def chat_turns(system: str, answer: str | None) -> list[dict[str, str]]:
    """Turn 1's messages (``answer`` None), or turn 2's after turn 1 answered ``answer``."""
    messages = [
        {"role": "system", "content": system},
        {"role": "user", "content": "Summarise the document in one sentence."},
    ]
    if answer is None:
        return messages
    return [
        *messages,
        {"role": "assistant", "content": answer},
        {"role": "user", "content": "Now name its three most frequent words."},
    ]


@dataclass
class ChatSample:
    turn1_ttft_s: float
    turn2_ttft_s: float
    turn2_prompt_tokens: int
    turn2_cached_tokens: int


@dataclass
class ModeResult:
    """One engine with the cache on or off: a sample per round."""

    engine: str
    cache: bool
    samples: list[ChatSample] = field(default_factory=list)

    @property
    def turn1_ttft_s(self) -> float:
        return statistics.median(s.turn1_ttft_s for s in self.samples)

    @property
    def turn2_ttft_s(self) -> float:
        return statistics.median(s.turn2_ttft_s for s in self.samples)

    @property
    def ratio(self) -> float:
        """Turn-2 TTFT / turn-1 TTFT (medians)."""
        return self.turn2_ttft_s / self.turn1_ttft_s

    @property
    def cached_tokens(self) -> int:
        return min(s.turn2_cached_tokens for s in self.samples)


def report(results: list[ModeResult]) -> str:
    """A Markdown table: one row per engine and mode, then turn-2 TTFT off / on."""
    lines = [
        "| engine | prefix cache | turn-1 TTFT (s) | turn-2 TTFT (s) | turn 2 / turn 1 "
        "| turn-2 cached / prompt tokens |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        prompt = min(s.turn2_prompt_tokens for s in r.samples)
        lines.append(
            f"| {r.engine} | {'on' if r.cache else 'off'} | {r.turn1_ttft_s:.3f} "
            f"| {r.turn2_ttft_s:.3f} | **{r.ratio:.3f}** | {r.cached_tokens} / {prompt} |"
        )
    lines.append("")
    for engine in dict.fromkeys(r.engine for r in results):
        modes = {r.cache: r for r in results if r.engine == engine}
        if True in modes:
            verdict = "meets" if modes[True].ratio <= TARGET_RATIO else "misses"
            lines.append(
                f"- {engine}: turn 2 / turn 1 with the cache = {modes[True].ratio:.3f} "
                f"({verdict} the target of {TARGET_RATIO})"
            )
        if True in modes and False in modes:
            speedup = modes[False].turn2_ttft_s / modes[True].turn2_ttft_s
            lines.append(f"- {engine}: turn-2 TTFT without / with the cache = {speedup:.1f}x")
    return "\n".join(lines)


# -- one replica ----------------------------------------------------------------------------


async def stream_turn(
    client: httpx.AsyncClient, messages: list[dict[str, str]], answer_tokens: int
) -> tuple[float, str, dict[str, Any]]:
    """Stream one chat turn: (TTFT in seconds, the answer's text, usage)."""
    body = {
        "model": SERVED_NAME,
        "messages": messages,
        "max_tokens": answer_tokens,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,
        "chat_template_kwargs": {"enable_thinking": False},
    }
    started = time.perf_counter()
    ttft: float | None = None
    text: list[str] = []
    usage: dict[str, Any] = {}
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[len("data: ") :])
            if chunk.get("error"):
                raise RuntimeError(f"the replica failed: {chunk['error']}")
            usage = chunk.get("usage") or usage
            for choice in chunk.get("choices") or ():
                delta = choice.get("delta") or {}
                piece = (delta.get("content") or "") + (delta.get("reasoning_content") or "")
                if ttft is None and (piece or choice.get("finish_reason")):
                    ttft = time.perf_counter() - started
                text.append(delta.get("content") or "")
    if ttft is None:
        raise RuntimeError("the stream ended without a token")
    return ttft, "".join(text), usage


async def run_chats(
    url: str, tokenizer: Any, args: argparse.Namespace, seed0: int
) -> list[ChatSample]:
    samples = []
    async with httpx.AsyncClient(base_url=url, timeout=600.0) as client:
        warm = chat_turns("You are terse.", None)
        await stream_turn(client, warm, 2)  # load kernels and caches before timing
        for round_ in range(args.rounds):
            system = system_prompt(tokenizer, args.prefix_tokens, seed0 + round_)
            ttft1, answer, _ = await stream_turn(
                client, chat_turns(system, None), args.answer_tokens
            )
            ttft2, _, usage = await stream_turn(
                client, chat_turns(system, answer or "I cannot say."), args.answer_tokens
            )
            details = usage.get("prompt_tokens_details") or {}
            samples.append(
                ChatSample(
                    ttft1, ttft2, int(usage["prompt_tokens"]), int(details.get("cached_tokens", 0))
                )
            )
            cached = samples[-1].turn2_cached_tokens
            say(
                f"  round {round_ + 1}: turn 1 {ttft1:.3f} s, turn 2 {ttft2:.3f} s, cached {cached}"
            )
    return samples


async def bench_mode(
    engine_name: str,
    cache: bool,
    model_path: Path,
    tokenizer: Any,
    args: argparse.Namespace,
    work: Path,
) -> ModeResult:
    from aiforge.cluster.runtimes.local import start_replica_process
    from aiforge.config import Settings
    from aiforge.engines.base import ReplicaSpec
    from aiforge.engines.registry import make_engine
    from aiforge.testing.server import free_port

    settings = Settings(data_dir=work / f"{engine_name}-{cache}")
    engine = make_engine(engine_name, settings)
    engine.prepare(say)
    port = free_port()
    spec = ReplicaSpec(
        model_path=model_path,
        served_model_name=SERVED_NAME,
        port=port,
        max_model_len=args.max_model_len,
        threads=args.threads,
        extra_args=() if cache else ("--no-prefix-cache",),
    )
    say(f"{engine_name}, prefix cache {'on' if cache else 'off'}: starting a replica")
    replica = await start_replica_process(
        engine.launch_plan(spec), replica_id=f"{engine_name}-{cache}",
        url=f"http://127.0.0.1:{port}", log_dir=settings.data_dir / "logs", progress=say,
    )  # fmt: skip
    try:
        # The same seeds in both modes: the two runs see the same chats.
        samples = await run_chats(replica.url, tokenizer, args, seed0=1000)
    finally:
        replica.stop()
    return ModeResult(engine_name, cache, samples)


# -- models -----------------------------------------------------------------------------------


def models(args: argparse.Namespace) -> dict[str, Path]:
    """The model each engine serves: Qwen3-0.6B's shape, or tiny ones with ``--smoke``."""
    from aiforge.models.random_weights import QWEN3_0_6B, copy_tokenizer, write_random_qwen3
    from aiforge.testing.gguf import random_qwen3_gguf, tiny_qwen3_gguf
    from aiforge.testing.models import qwen3_tokenizer_dir, tiny_qwen3

    cache: Path = args.cache
    if args.smoke:
        hf = cache / "tiny-qwen3"
        if not (hf / "config.json").exists():
            tiny_qwen3(hf)
        return {"transformers": hf, "llamacpp": tiny_qwen3_gguf(cache / "tiny-qwen3-gguf")}
    hf = cache / "qwen3-0.6b-random-bf16"
    if not (hf / "config.json").exists():
        say(f"building a random Qwen3-0.6B-shaped checkpoint in {hf} (once)")
        write_random_qwen3(hf, tokenizer_dir=qwen3_tokenizer_dir(), shape=QWEN3_0_6B)
    folder = cache / "qwen3-0.6b-random-q8_0"
    gguf = folder / "model.gguf"
    if not gguf.exists():
        say(f"building a random Qwen3-0.6B-shaped Q8_0 GGUF in {folder} (once)")
        folder.mkdir(parents=True, exist_ok=True)
        copy_tokenizer(qwen3_tokenizer_dir(), folder)
        random_qwen3_gguf(gguf, shape=QWEN3_0_6B, dtype="q8_0")
    return {"transformers": hf, "llamacpp": gguf}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--engines", default="transformers,llamacpp")
    parser.add_argument("--prefix-tokens", type=int, default=2000, help="system prompt tokens")
    parser.add_argument("--answer-tokens", type=int, default=16, help="tokens per answer")
    parser.add_argument("--rounds", type=int, default=3, help="chats per engine and mode")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--smoke", action="store_true", help="tiny models, a 300-token prefix")
    parser.add_argument(
        "--cache", type=Path, default=Path.home() / ".cache" / "aiforge" / "bench",
        help="where the random checkpoints are kept between runs",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    parser.add_argument("--force", action="store_true", help=f"run above load {MAX_LOAD}")
    args = parser.parse_args(argv)
    if args.smoke:
        args.prefix_tokens, args.rounds, args.answer_tokens = 300, 1, 4
        args.max_model_len = min(args.max_model_len, 1024)
    return args


async def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    load = os.getloadavg()[0]
    if load > MAX_LOAD and not args.force:
        sys.exit(f"load average {load:.2f} > {MAX_LOAD}: the machine is busy (--force to run)")
    from transformers import AutoTokenizer

    from aiforge.testing.models import qwen3_tokenizer_dir

    tokenizer = AutoTokenizer.from_pretrained(qwen3_tokenizer_dir())
    paths = models(args)
    results: list[ModeResult] = []
    with tempfile.TemporaryDirectory(prefix="aiforge-bench-") as tmp:
        for name in (n.strip() for n in args.engines.split(",") if n.strip()):
            for cache in (True, False):
                results.append(
                    await bench_mode(name, cache, paths[name], tokenizer, args, Path(tmp))
                )
    print(report(results))
    print(f"\nload average: {load:.2f} at the start, {os.getloadavg()[0]:.2f} at the end")
    if args.json:
        payload = {
            "args": {k: str(v) for k, v in vars(args).items()},
            "load_at_start": load,
            "results": [
                {
                    **asdict(r),
                    "turn1_ttft_s": r.turn1_ttft_s,
                    "turn2_ttft_s": r.turn2_ttft_s,
                    "ratio": r.ratio,
                }
                for r in results
            ],
        }
        args.json.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
