"""The seam between aiforge's own OpenAI replica server and a token-level engine.

aiforge's replica server (:mod:`aiforge.engines.server`) owns everything OpenAI-shaped:
chat templates, tool-call and reasoning parsing, stop strings, ``n``, detokenisation,
logprob formatting, grammars for structured output. A :class:`TokenEngine` owns only the
model: it turns prompt token ids into a stream of sampled token ids, batching requests
continuously. The transformers engine and the llama.cpp engine implement it.

These are the only structs that cross from the server into an engine.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

FinishReason = Literal["stop", "length", "abort"]


class EngineDeadError(RuntimeError):
    """The engine's loop has died: no request can run until the replica is restarted.

    Raised by :meth:`TokenEngine.generate` (at once for new requests, and to those that were
    running); the server answers 503 and ``/health`` turns unhealthy so the replica is
    replaced.
    """


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """How to pick each next token. Validated by the server before it gets here."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    """0 disables top-k."""
    seed: int | None = None
    """A per-request generator seeded with this makes sampling reproducible, batched or not."""
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logprobs: int | None = None
    """None: no logprobs. k >= 0: the sampled token's logprob plus the top k alternatives."""
    stop_token_ids: frozenset[int] = frozenset()
    """Generation ends (finish_reason "stop") after emitting one of these."""
    ignore_eos: bool = False
    logit_bias: tuple[tuple[int, float], ...] = ()
    """OpenAI's ``logit_bias``: (token id, bias added to its logit) pairs."""


@runtime_checkable
class TokenConstraint(Protocol):
    """Constrained-decoding state for one sequence (wraps a grammar matcher).

    The engine calls :meth:`mask_logits` on the sequence's logits row before sampling,
    then :meth:`accept` with the sampled token. When :meth:`is_finished` turns true the
    engine ends the sequence with finish_reason ``"stop"``.
    """

    def mask_logits(self, logits: torch.Tensor) -> None:
        """Set the logits of tokens the grammar forbids now to ``-inf``, in place (1-D row)."""

    def accept(self, token_id: int) -> None: ...

    def is_finished(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class ImageInputs:
    """A prompt's images, preprocessed for a vision-language model, in prompt order.

    The prompt holds ``tokens_per_image[i]`` image placeholder tokens for image ``i``.
    """

    pixel_values: torch.Tensor
    """The patches of every image, concatenated (``[patches, channels * patch volume]``)."""
    grid_thw: torch.Tensor
    """``[images, 3]``: each image's (time, height, width) grid of patches."""
    tokens_per_image: tuple[int, ...]


@runtime_checkable
class ImagePreprocessor(Protocol):
    """What an engine that takes images offers the server, as its ``vision`` attribute
    (``None``, or no such attribute, on engines that take none)."""

    @property
    def image_token_id(self) -> int:
        """The placeholder token the chat template puts where each image goes."""

    def preprocess(self, images: Sequence[Any]) -> ImageInputs:
        """Resize and patch decoded images (``PIL.Image.Image``); blocking, CPU-bound."""


@dataclass(slots=True)
class GenerationRequest:
    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    constraint: TokenConstraint | None = None
    images: ImageInputs | None = None
    """Images of the prompt (its placeholder tokens are already expanded), or None."""


@dataclass(frozen=True, slots=True)
class TokenEvent:
    """One sampled token. The last event of a request carries its finish reason."""

    token_id: int
    logprob: float | None = None
    top_logprobs: tuple[tuple[int, float], ...] = ()
    finish_reason: FinishReason | None = None
    cached_prompt_tokens: int = 0
    """Set on the first event: how many prompt tokens were served from a prefix cache."""


@dataclass(frozen=True, slots=True)
class EngineModelInfo:
    max_model_len: int
    vocab_size: int
    """Size of the model's logits row (may exceed the tokenizer's vocabulary)."""
    eos_token_ids: frozenset[int]
    is_embedding: bool = False
    embedding_dim: int | None = None
    classifier_token_ids: tuple[int, int] | None = None
    """A yes/no reranker (Qwen3-Reranker): the ids of its "no" and "yes" tokens, whose
    logits at a scored prompt's last position give the pair's relevance. None otherwise."""

    @property
    def is_reranker(self) -> bool:
        return self.classifier_token_ids is not None

    @property
    def generates(self) -> bool:
        """Whether the model generates text (chat and completions); pooling models do not."""
        return not (self.is_embedding or self.is_reranker)


@runtime_checkable
class TokenEngine(Protocol):
    """A running model that generates tokens for many requests at once."""

    @property
    def info(self) -> EngineModelInfo: ...

    async def start(self) -> None:
        """Start the engine's background loop. Called once, before any request."""

    async def shutdown(self) -> None:
        """Abort running requests and stop the loop."""

    def generate(self, request: GenerationRequest) -> AsyncIterator[TokenEvent]:
        """Stream the request's tokens as they are sampled.

        Closing the iterator early (client disconnect, stop string hit) aborts the request
        and frees its batch slot at the next token boundary.
        """

    async def embed(self, inputs: Sequence[Sequence[int]]) -> list[list[float]]:
        """Pooled, normalised embeddings for each token-id sequence (embedding models)."""

    async def score(self, prompts: Sequence[Sequence[int]]) -> list[float]:
        """Each prompt's relevance in [0, 1] (rerankers): the softmax of the "yes" logit
        against the "no" logit (:attr:`EngineModelInfo.classifier_token_ids`) after the
        prompt's last token. Prompts are whole scored pairs, already templated."""

    def load(self) -> dict[str, int]:
        """Current load, for routing and ``/metrics``: ``{"running": n, "waiting": m}``."""

    def fatal_error(self) -> str | None:
        """None while the engine can serve; once its loop has died, why (for ``/health``)."""
