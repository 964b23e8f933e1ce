"""``python -m aiforge.engines.transformers --model DIR --port N ...``: one replica process.

aiforge's replica server parses the common flags and serves the OpenAI endpoints; this
module only supplies how to build the engine.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from aiforge.engines.core import TokenEngine
    from aiforge.engines.server.main import ReplicaArgs


T = TypeVar("T")


async def in_passing_thread(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` in a new thread that ends when ``fn`` returns.

    Not ``asyncio.to_thread``: torch's parallel ops give every thread that runs them its
    own OpenMP team, and the executor's threads outlive the call. With the loading thread's
    team still alive next to the engine thread's, the process has more OpenMP threads than
    cores, and libgomp then cuts every thread's spin at a barrier to 100 turns (whatever
    ``GOMP_SPINCOUNT`` says): the engine's threads sleep and wake at each of a decode
    step's hundreds of barriers, and the replica kept ~1.65 of 2 cores busy where plain
    ``generate`` kept 1.96. A thread that ends frees its team.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if done.cancelled():
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            loop.call_soon_threadsafe(settle, None, exc)
        else:
            loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=run, name="aiforge-load", daemon=True).start()
    return await done


async def build_engine(args: ReplicaArgs) -> tuple[TokenEngine, Any]:
    """Load the model in a passing thread (so the server's loop stays alive; see
    :func:`in_passing_thread`) and return ``(engine, tokenizer)``. The server calls
    ``engine.start()``."""
    from aiforge.engines.transformers.engine import TransformersTokenEngine

    engine = await in_passing_thread(
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
