"""A scripted :class:`~aiforge.engines.core.TokenEngine`, for testing servers and clients.

:class:`FakeTokenEngine` needs no model: it emits a script of token ids (for example the
tokenization of a Qwen-style answer) with an optional delay per token. With a constraint
(structured output), it instead samples uniformly among the tokens the constraint allows,
which exercises the grammar for real.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import random
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
import torch
from transformers import PreTrainedTokenizerBase

from aiforge.engines.core import (
    EngineDeadError,
    EngineModelInfo,
    FinishReason,
    GenerationRequest,
    TokenEngine,
    TokenEvent,
)

if TYPE_CHECKING:
    from aiforge.engines.server.limits import RequestLimits

Script = Callable[[GenerationRequest], Sequence[int]]


@dataclass
class FakeTokenEngine(TokenEngine):
    """Emits ``script(request)`` token by token.

    ``script`` gets the request and returns the token ids to emit (EOS is appended
    unless ``ignore_eos``); ``max_tokens`` cuts it with finish_reason ``"length"``.
    Records every request and which were closed early in ``requests`` / ``aborted``.
    """

    script: Script
    max_model_len: int = 4096
    vocab_size: int = 151936
    eos_token_ids: frozenset[int] = frozenset({151645, 151643})
    token_delay_s: float = 0.0
    embedding_dim: int | None = None
    classifier_token_ids: tuple[int, int] | None = None
    """Set: a reranker; ``score`` gives each prompt a relevance drawn from its digest."""
    cached_prompt_tokens: int = 0
    fail_with: Exception | None = None
    fatal: str | None = None
    """Set: the engine's loop "has died" (``fatal_error``); every request is refused."""
    requests: list[GenerationRequest] = field(default_factory=list)
    aborted: list[str] = field(default_factory=list)
    started: bool = False
    running: int = 0

    @property
    def info(self) -> EngineModelInfo:
        return EngineModelInfo(
            max_model_len=self.max_model_len,
            vocab_size=self.vocab_size,
            eos_token_ids=self.eos_token_ids,
            is_embedding=self.embedding_dim is not None,
            embedding_dim=self.embedding_dim,
            classifier_token_ids=self.classifier_token_ids,
        )

    async def start(self) -> None:
        self.started = True

    async def shutdown(self) -> None:
        self.started = False

    def load(self) -> dict[str, int]:
        return {"running": self.running, "waiting": 0}

    def fatal_error(self) -> str | None:
        return self.fatal

    async def generate(self, request: GenerationRequest) -> AsyncIterator[TokenEvent]:
        self.requests.append(request)
        if self.fatal is not None:
            raise EngineDeadError(self.fatal)
        if self.fail_with is not None:
            raise self.fail_with
        self.running += 1
        finished = False
        try:
            tokens = self._tokens(request)
            for position, (token_id, logprob, top) in enumerate(tokens):
                if self.token_delay_s:
                    await asyncio.sleep(self.token_delay_s)
                else:
                    await asyncio.sleep(0)
                reason = self._finish(request, position, len(tokens), token_id)
                yield TokenEvent(
                    token_id=token_id,
                    logprob=logprob if request.params.logprobs is not None else None,
                    top_logprobs=top[: request.params.logprobs or 0],
                    finish_reason=reason,
                    cached_prompt_tokens=self.cached_prompt_tokens if position == 0 else 0,
                )
                if reason is not None:
                    finished = True
                    return
        finally:
            self.running -= 1
            if not finished:
                self.aborted.append(request.request_id)

    def _tokens(
        self, request: GenerationRequest
    ) -> list[tuple[int, float, tuple[tuple[int, float], ...]]]:
        limit = request.params.max_tokens
        if request.constraint is not None:
            return self._constrained(request, limit)
        ids = list(self.script(request))
        if not request.params.ignore_eos:
            ids.append(min(self.eos_token_ids))
        ids = ids[:limit]
        return [(t, -0.5, ((t, -0.5), ((t + 1) % self.vocab_size, -1.5))) for t in ids]

    def _constrained(
        self, request: GenerationRequest, limit: int
    ) -> list[tuple[int, float, tuple[tuple[int, float], ...]]]:
        """Follow the script while the constraint allows it, else sample uniformly among the
        allowed tokens (so the grammar alone decides what comes out)."""
        seed = request.params.seed if request.params.seed is not None else _stable_seed(request)
        rng = random.Random(seed)
        script = list(self.script(request))
        constraint = request.constraint
        assert constraint is not None
        out: list[tuple[int, float, tuple[tuple[int, float], ...]]] = []
        for position in range(limit):
            logits = torch.zeros(self.vocab_size)
            constraint.mask_logits(logits)
            allowed = torch.nonzero(logits > -math.inf).flatten().tolist()
            scripted = script[position] if position < len(script) else None
            on_script = scripted is not None and logits[scripted] > -math.inf
            token_id = scripted if scripted is not None and on_script else int(rng.choice(allowed))
            constraint.accept(token_id)
            out.append((token_id, -math.log(len(allowed)), ()))
            if token_id in self.eos_token_ids or constraint.is_finished():
                break
        return out

    def _finish(
        self, request: GenerationRequest, position: int, count: int, token_id: int
    ) -> FinishReason | None:
        if position < count - 1:
            return None
        if token_id in self.eos_token_ids and not request.params.ignore_eos:
            return "stop"
        if request.constraint is not None and request.constraint.is_finished():
            return "stop"
        return "length" if count >= request.params.max_tokens else "stop"

    async def embed(self, inputs: Sequence[Sequence[int]]) -> list[list[float]]:
        if self.embedding_dim is None:
            raise RuntimeError("not an embedding model")
        vectors = []
        for ids in inputs:
            rng = random.Random(_digest(ids))
            raw = [rng.gauss(0.0, 1.0) for _ in range(self.embedding_dim)]
            norm = math.sqrt(sum(x * x for x in raw)) or 1.0
            vectors.append([x / norm for x in raw])
        return vectors

    async def score(self, prompts: Sequence[Sequence[int]]) -> list[float]:
        if self.classifier_token_ids is None:
            raise RuntimeError("not a reranker")
        return [random.Random(_digest(ids)).random() for ids in prompts]


def _stable_seed(request: GenerationRequest) -> int:
    return _digest(request.prompt_token_ids)


def _digest(ids: Sequence[int]) -> int:
    return int.from_bytes(hashlib.sha256(str(list(ids)).encode()).digest()[:8], "big")


def text_script(tokenizer: object, text: str) -> Script:
    """A script that answers every request with the tokenization of ``text``."""
    ids = list(tokenizer.encode(text, add_special_tokens=False))  # type: ignore[attr-defined]
    return lambda _request: ids


@contextlib.asynccontextmanager
async def fake_replica(
    engine: TokenEngine,
    tokenizer: PreTrainedTokenizerBase,
    *,
    served_model_name: str = "fake-model",
    max_body_bytes: int = 8 * 1024 * 1024,
    limits: RequestLimits | None = None,
) -> AsyncIterator[httpx.AsyncClient]:
    """The real replica app over ``engine``, started, behind an in-process httpx client."""
    from aiforge.engines.server.app import create_replica_app
    from aiforge.engines.server.context import ReplicaContext
    from aiforge.engines.server.limits import RequestLimits
    from aiforge.engines.server.metrics import ReplicaMetrics

    ctx = ReplicaContext(
        engine=engine,
        tokenizer=tokenizer,
        served_model_name=served_model_name,
        max_model_len=engine.info.max_model_len,
        metrics=ReplicaMetrics(served_model_name, engine.load),
        limits=limits or RequestLimits(),
    )
    app = create_replica_app(ctx, max_body_bytes=max_body_bytes)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://replica") as client:
            yield client


def sse_payloads(body: str) -> list[Any]:
    """The JSON payloads of an OpenAI SSE body; asserts it ends with ``data: [DONE]``."""
    payloads = [line[len("data: ") :] for line in body.split("\n\n") if line.startswith("data: ")]
    if not payloads or payloads[-1] != "[DONE]":
        raise AssertionError(f"stream did not end with [DONE]: {body[-200:]!r}")
    return [json.loads(p) for p in payloads[:-1]]


class BrokenConstraint:
    """A constraint whose mask fails: a request whose sampling raises inside an engine loop
    (to test that one request's failure does not take the loop down)."""

    def mask_logits(self, logits: Any) -> None:
        raise RuntimeError("mask exploded")

    def accept(self, token_id: int) -> None:
        pass

    def is_finished(self) -> bool:
        return False
