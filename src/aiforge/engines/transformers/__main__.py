"""``python -m aiforge.engines.transformers --model DIR --port N ...``: one replica process.

aiforge's replica server parses the common flags and serves the OpenAI endpoints; this
module only supplies how to build the engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiforge.engines.core import TokenEngine
    from aiforge.engines.server.main import ReplicaArgs


async def build_engine(args: ReplicaArgs) -> tuple[TokenEngine, Any]:
    """Load the model in a worker thread (so the server's loop stays alive) and return
    ``(engine, tokenizer)``. The server calls ``engine.start()``."""
    from aiforge.engines.transformers.engine import TransformersTokenEngine

    engine = await asyncio.to_thread(
        TransformersTokenEngine.from_pretrained,
        args.model,
        dtype=args.dtype,
        max_model_len=args.max_model_len,
        max_num_seqs=args.max_num_seqs,
        threads=args.threads,
        embedding=True if args.embedding else None,
        reranker=True if args.reranker else None,
        prefix_cache_sequences=args.prefix_cache_sequences,
    )
    return engine, engine.tokenizer


def main(argv: Sequence[str] | None = None) -> None:
    from aiforge.engines.server.main import run_replica

    run_replica(argv, build_engine)


if __name__ == "__main__":
    main()
