"""Build the llama.cpp engine and its Hugging Face tokenizer for a replica."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from aiforge.engines.llamacpp.engine import LlamaCppTokenEngine
from aiforge.engines.llamacpp.paths import find_gguf
from aiforge.engines.llamacpp.runner import LlamaRunner, RunnerConfig, silence_llama_logs
from aiforge.engines.server.main import ReplicaArgs

__all__ = ["build_engine", "load_tokenizer", "open_runner", "resolve_model", "stop_tokens"]

log = logging.getLogger("aiforge.engines.llamacpp")


def load_tokenizer(gguf_path: Path) -> PreTrainedTokenizerBase:
    """The Hugging Face tokenizer of a GGUF model.

    From ``tokenizer.json`` beside the file when present (exact, with its chat template),
    else rebuilt by transformers from the GGUF's own tokenizer metadata. Either way its ids
    are llama.cpp's ids: both come from the same vocabulary.
    """
    folder = gguf_path.parent
    if (folder / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder, gguf_file=gguf_path.name)


def resolve_model(args: ReplicaArgs) -> Path:
    """The GGUF file the replica serves; refuses what this engine cannot serve."""
    if args.embedding:
        raise ValueError(
            "the llama.cpp engine serves chat and completion models only; "
            "serve embedding models with the transformers engine"
        )
    gguf = find_gguf(args.model)
    if gguf is None:
        raise ValueError(f"{args.model} is not a .gguf file or a directory holding exactly one")
    return gguf


def open_runner(gguf: Path, args: ReplicaArgs) -> LlamaRunner:
    """Load ``gguf`` into a llama.cpp context sized by the replica's arguments."""
    silence_llama_logs()
    config = RunnerConfig(
        model_path=gguf,
        max_model_len=args.max_model_len,
        max_num_seqs=args.max_num_seqs,
        threads=args.threads,
        resident_seqs=args.prefix_cache_sequences,
    )
    return LlamaRunner(config)


def stop_tokens(runner: LlamaRunner, tokenizer: PreTrainedTokenizerBase) -> frozenset[int]:
    """llama.cpp's end-of-generation tokens that are also special in the tokenizer, so a
    GGUF stops where the same model stops on the transformers engine."""
    special = {i for i, token in tokenizer.added_tokens_decoder.items() if token.special}
    return runner.eog_token_ids() & special


async def build_engine(args: ReplicaArgs) -> tuple[LlamaCppTokenEngine, PreTrainedTokenizerBase]:
    """Load model and tokenizer off the event loop, start the engine thread."""
    # llama.cpp's threads do the model's work; torch only samples one logits row at a time.
    # Torch's own OpenMP pool would spin beside ggml's and starve it on a small machine.
    torch.set_num_threads(1)
    gguf = resolve_model(args)
    runner = await asyncio.to_thread(open_runner, gguf, args)
    tokenizer = await asyncio.to_thread(load_tokenizer, gguf)
    log.info(
        "llama.cpp: %s, %d sequences x %d tokens, batch %d",
        gguf.name,
        runner.max_num_seqs,
        runner.max_model_len,
        runner.max_batch_tokens,
    )
    engine = LlamaCppTokenEngine(runner, eos_token_ids=stop_tokens(runner, tokenizer))
    await engine.start()
    return engine, tokenizer
