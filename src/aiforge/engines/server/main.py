"""Entry point of a replica process: parse the common flags, build the engine, serve.

Engine packages call :func:`run_replica` from their ``__main__`` with an async
``build_engine`` that loads the model and returns ``(engine, tokenizer)``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from transformers import PreTrainedTokenizerBase

from aiforge.config import Settings
from aiforge.engines.core import TokenEngine
from aiforge.engines.prefix_cache import DEFAULT_PREFIX_CACHE_SEQUENCES
from aiforge.engines.server.app import create_replica_app
from aiforge.engines.server.context import ReplicaContext
from aiforge.engines.server.limits import RequestLimits
from aiforge.engines.server.metrics import ReplicaMetrics
from aiforge.engines.server.params import SamplingDefaults

log = logging.getLogger("aiforge.replica")


@dataclass(frozen=True, slots=True)
class ReplicaArgs:
    model: Path
    served_model_name: str
    host: str = "127.0.0.1"
    port: int = 8000
    dtype: str = "auto"
    max_model_len: int | None = None
    max_num_seqs: int = 16
    threads: int | None = None
    embedding: bool = False
    reranker: bool = False
    max_body_bytes: int = 8 * 1024 * 1024
    prefix_cache_sequences: int = DEFAULT_PREFIX_CACHE_SEQUENCES
    """Finished sequences whose KV the engine keeps for prompts sharing a prefix; 0: off."""


BuildEngine = Callable[[ReplicaArgs], Awaitable[tuple[TokenEngine, PreTrainedTokenizerBase]]]


def parse_args(argv: Sequence[str] | None, settings: Settings | None = None) -> ReplicaArgs:
    """The replica's flags; ``settings`` gives the defaults of those it shares with them."""
    settings = settings or Settings()
    parser = argparse.ArgumentParser(description="Serve one model replica behind the OpenAI API.")
    parser.add_argument("--model", required=True, type=Path, help="model directory or file")
    parser.add_argument("--served-model-name", help="name clients use (default: the model's)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--max-model-len", type=int, default=None)
    parser.add_argument("--max-num-seqs", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--embedding", action="store_true", help="serve /v1/embeddings")
    parser.add_argument(
        "--reranker", action="store_true", help="a yes/no reranker: serve /v1/rerank, /v1/score"
    )
    parser.add_argument("--max-body-bytes", type=int, default=8 * 1024 * 1024)
    parser.add_argument(
        "--no-prefix-cache",
        dest="prefix_cache",
        action="store_false",
        default=settings.prefix_cache,
        help="compute every prompt whole (aiforge's engines reuse shared prefixes' KV)",
    )
    parser.add_argument(
        "--prefix-cache-sequences",
        type=int,
        default=settings.prefix_cache_sequences,
        help="finished sequences whose KV stays resident for reuse (the memory bound)",
    )
    ns = parser.parse_args(argv)
    if ns.prefix_cache_sequences < 1:
        parser.error("--prefix-cache-sequences must be at least 1")
    return ReplicaArgs(
        model=ns.model,
        served_model_name=ns.served_model_name or ns.model.name,
        host=ns.host,
        port=ns.port,
        dtype=ns.dtype,
        max_model_len=ns.max_model_len,
        max_num_seqs=ns.max_num_seqs,
        threads=ns.threads,
        embedding=ns.embedding,
        reranker=ns.reranker,
        max_body_bytes=ns.max_body_bytes,
        prefix_cache_sequences=ns.prefix_cache_sequences if ns.prefix_cache else 0,
    )


def run_replica(argv: Sequence[str] | None, build_engine: BuildEngine) -> None:
    """Serve until SIGINT/SIGTERM; shutdown stops the engine (``engine.shutdown()``).

    The replica process is an edge: its request limits come from the ``AIFORGE_*``
    settings in the environment it inherits from whoever started it.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = Settings()
    limits = RequestLimits.from_settings(settings)
    asyncio.run(serve_replica(parse_args(argv, settings), build_engine, limits=limits))


async def serve_replica(
    args: ReplicaArgs, build_engine: BuildEngine, *, limits: RequestLimits | None = None
) -> None:
    engine, tokenizer = await build_engine(args)
    info = engine.info
    max_model_len = min(args.max_model_len or info.max_model_len, info.max_model_len)
    ctx = ReplicaContext(
        engine=engine,
        tokenizer=tokenizer,
        served_model_name=args.served_model_name,
        max_model_len=max_model_len,
        metrics=ReplicaMetrics(args.served_model_name, engine.load),
        defaults=SamplingDefaults.from_model_dir(args.model),
        limits=limits or RequestLimits(),
    )
    app = create_replica_app(ctx, max_body_bytes=args.max_body_bytes)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=10,
    )
    await _ReplicaServer(config, args).serve()


class _ReplicaServer(uvicorn.Server):
    """uvicorn's server, logging one line once the replica accepts requests."""

    def __init__(self, config: uvicorn.Config, args: ReplicaArgs) -> None:
        super().__init__(config)
        self._args = args

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.should_exit:
            return
        port = self._args.port
        if self.servers and self.servers[0].sockets:
            port = self.servers[0].sockets[0].getsockname()[1]
        log.info(
            "replica ready: model %s (%s) on http://%s:%d",
            self._args.served_model_name,
            self._args.model,
            self._args.host,
            port,
        )
