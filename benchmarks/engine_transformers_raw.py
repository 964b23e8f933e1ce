"""Raw throughput of the transformers engine against plain batched HF ``generate``.

Builds (once, cached in ``--model-dir``) a random-weight model of the Qwen3-0.6B shape in
bfloat16, then measures, in one run, generated tokens per second for 1 stream and for
``--streams`` concurrent streams (``--new-tokens`` each, greedy, EOS ignored):

- ``engine``: :class:`TransformersTokenEngine` (continuous batching, slot KV cache);
- ``hf-generate``: ``model.generate`` on the same weights, one request / one batch of all
  streams at once (the peer; it cannot admit requests mid-batch).

Then the same ``--streams`` arriving one every ``--stagger`` seconds: the engine admits each
as it comes; ``generate`` serves them in static batches (everything that arrived while the
previous batch ran). Prompts are ``--prompt-tokens`` long, all the same length, so
``generate`` needs no padding.

Usage: ``python benchmarks/engine_transformers_raw.py [--model-dir /tmp/qwen3-0.6b-bf16]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from pathlib import Path

import torch

from aiforge.engines.core import GenerationRequest, SamplingParams
from aiforge.engines.transformers.engine import TransformersTokenEngine
from aiforge.engines.transformers.loading import LoadedModel, load_model
from aiforge.models.random_weights import QWEN3_0_6B, write_random_qwen3
from aiforge.testing.models import qwen3_tokenizer_dir


def _prompts(n: int, length: int) -> list[list[int]]:
    return [[(1000 + 97 * i + j) % 150000 for j in range(length)] for i in range(n)]


async def _engine_run(
    loaded: LoadedModel, prompts: list[list[int]], new_tokens: int, stagger: float = 0.0
) -> float:
    engine = TransformersTokenEngine(loaded, max_num_seqs=len(prompts))
    await engine.start()
    params = SamplingParams(max_tokens=new_tokens, temperature=0.0, ignore_eos=True)

    async def one(i: int, prompt: list[int]) -> int:
        await asyncio.sleep(i * stagger)
        request = GenerationRequest(f"bench-{i}", prompt, params)
        return len([e async for e in engine.generate(request)])

    try:
        started = time.perf_counter()
        counts = await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts)))
        elapsed = time.perf_counter() - started
    finally:
        await engine.shutdown()
    return sum(counts) / elapsed


def _hf_generate(loaded: LoadedModel, prompts: list[list[int]], new_tokens: int) -> int:
    ids = torch.tensor(prompts)
    with torch.inference_mode():
        out = loaded.model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=0,
        )
    return int(out.shape[1] - ids.shape[1]) * len(prompts)


def _hf_run(
    loaded: LoadedModel, prompts: list[list[int]], new_tokens: int, stagger: float = 0.0
) -> float:
    """Static batching: each ``generate`` call takes every request that has arrived."""
    streams = len(prompts)
    started = time.perf_counter()
    served = generated = 0
    while served < streams:
        now = time.perf_counter() - started
        arrived = streams if stagger <= 0 else min(streams, int(now / stagger) + 1)
        if arrived == served:
            time.sleep(served * stagger - now)
            continue
        generated += _hf_generate(loaded, prompts[served:arrived], new_tokens)
        served = arrived
    return generated / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=Path("/tmp/h1/qwen3-0.6b-bf16"))
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--stagger", type=float, default=2.0, help="seconds between arrivals")
    args = parser.parse_args()
    if not (args.model_dir / "config.json").is_file():
        print(f"building a random Qwen3-0.6B-shaped model in {args.model_dir} ...")
        write_random_qwen3(
            args.model_dir, tokenizer_dir=qwen3_tokenizer_dir(), shape=QWEN3_0_6B,
            dtype="bfloat16",
        )  # fmt: skip
    loaded = load_model(args.model_dir, dtype="bfloat16", threads=args.threads)
    print(f"threads={torch.get_num_threads()} dtype={loaded.dtype} new_tokens={args.new_tokens} "
          f"prompt_tokens={args.prompt_tokens} load={os.getloadavg()[0]:.1f}")  # fmt: skip
    _hf_run(loaded, _prompts(1, 4), 4)  # warm-up: first-call allocations and kernel choice
    rows = []
    for streams in (1, args.streams):
        prompts = _prompts(streams, args.prompt_tokens)
        engine_tps = asyncio.run(_engine_run(loaded, prompts, args.new_tokens))
        hf_tps = _hf_run(loaded, prompts, args.new_tokens)
        rows.append((streams, engine_tps, hf_tps))
        print(f"{streams:>2} streams: engine {engine_tps:6.1f} tok/s   hf-generate "
              f"{hf_tps:6.1f} tok/s   ratio {engine_tps / hf_tps:4.2f}", flush=True)  # fmt: skip
    (_, e1, h1), (sn, en, hn) = rows
    print(f"scaling {sn} vs 1 stream: engine {en / e1:4.2f}x   hf-generate {hn / h1:4.2f}x")
    if args.stagger > 0:
        prompts = _prompts(sn, args.prompt_tokens)
        engine_tps = asyncio.run(_engine_run(loaded, prompts, args.new_tokens, args.stagger))
        hf_tps = _hf_run(loaded, prompts, args.new_tokens, args.stagger)
        print(f"{sn:>2} staggered by {args.stagger:g}s: engine {engine_tps:6.1f} tok/s   "
              f"hf-generate {hf_tps:6.1f} tok/s   ratio {engine_tps / hf_tps:4.2f}")  # fmt: skip
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
