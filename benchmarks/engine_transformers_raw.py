"""Raw throughput of the transformers engine against plain batched HF ``generate``.

Builds (once, cached in ``--model-dir``) a random-weight model of the Qwen3-0.6B shape in
bfloat16, then measures, in one run, generated tokens per second for 1 stream and for
``--streams`` concurrent streams (``--new-tokens`` each, greedy, EOS ignored):

- ``engine``: :class:`TransformersTokenEngine` (continuous batching, slot KV cache);
- ``hf-generate``: ``model.generate`` on the same weights, one request / one left-padded
  batch of all streams at once (the peer; it cannot admit requests mid-batch).

Usage: ``python benchmarks/engine_transformers_raw.py [--model-dir /tmp/qwen3-0.6b-bf16]``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import torch

from aiforge.engines.core import GenerationRequest, SamplingParams
from aiforge.engines.transformers.engine import TransformersTokenEngine
from aiforge.engines.transformers.loading import LoadedModel, load_model
from aiforge.models.random_weights import QWEN3_0_6B, write_random_qwen3
from aiforge.testing.models import qwen3_tokenizer_dir


def _prompts(n: int, length: int = 32) -> list[list[int]]:
    return [[(1000 + 97 * i + j) % 150000 for j in range(length)] for i in range(n)]


async def _engine_run(loaded: LoadedModel, streams: int, new_tokens: int) -> float:
    engine = TransformersTokenEngine(loaded, max_num_seqs=max(streams, 1))
    await engine.start()
    params = SamplingParams(max_tokens=new_tokens, temperature=0.0, ignore_eos=True)

    async def one(i: int, prompt: list[int]) -> int:
        request = GenerationRequest(f"bench-{i}", prompt, params)
        return len([e async for e in engine.generate(request)])

    try:
        started = time.perf_counter()
        counts = await asyncio.gather(*(one(i, p) for i, p in enumerate(_prompts(streams))))
        elapsed = time.perf_counter() - started
    finally:
        await engine.shutdown()
    return sum(counts) / elapsed


def _hf_run(loaded: LoadedModel, streams: int, new_tokens: int) -> float:
    prompts = torch.tensor(_prompts(streams))
    with torch.inference_mode():
        started = time.perf_counter()
        out = loaded.model.generate(
            prompts,
            attention_mask=torch.ones_like(prompts),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=0,
        )
        elapsed = time.perf_counter() - started
    generated = int(out.shape[1] - prompts.shape[1]) * streams
    return generated / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=Path("/tmp/h1/qwen3-0.6b-bf16"))
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if not (args.model_dir / "config.json").is_file():
        print(f"building a random Qwen3-0.6B-shaped model in {args.model_dir} ...")
        write_random_qwen3(
            args.model_dir, tokenizer_dir=qwen3_tokenizer_dir(), shape=QWEN3_0_6B,
            dtype="bfloat16",
        )  # fmt: skip
    loaded = load_model(args.model_dir, dtype="bfloat16", threads=args.threads)
    print(f"threads={torch.get_num_threads()} dtype={loaded.dtype} new_tokens={args.new_tokens}")
    _hf_run(loaded, 1, 4)  # warm-up: first-call allocations and kernel selection
    rows = []
    for streams in (1, args.streams):
        engine_tps = asyncio.run(_engine_run(loaded, streams, args.new_tokens))
        hf_tps = _hf_run(loaded, streams, args.new_tokens)
        rows.append((streams, engine_tps, hf_tps))
        print(f"{streams:>2} streams: engine {engine_tps:6.1f} tok/s   "
              f"hf-generate {hf_tps:6.1f} tok/s   ratio {engine_tps / hf_tps:4.2f}")  # fmt: skip
    (_, e1, h1), (sn, en, hn) = rows
    print(f"scaling {sn} vs 1 stream: engine {en / e1:4.2f}x   hf-generate {hn / h1:4.2f}x")


if __name__ == "__main__":
    main()
