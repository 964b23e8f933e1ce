"""How the gateway reads a replica's answers, by the dialect its engine speaks.

Each replica carries its engine's dialect (:attr:`aiforge.engines.base.Engine.dialect`), so
the gateway never switches on engine names: it asks the replica's :class:`Dialect` to bring
a non-streamed body to OpenAI's exact shape and whether streamed chunks need the reasoning
rename, and to put a request into the names the engine reads. ``openai`` (aiforge's own
replica server) already speaks OpenAI's dialect; ``vllm`` differs in the ways
:mod:`aiforge.gateway.dialects.vllm` lists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from aiforge.gateway.dialects.vllm import conform_vllm_answer, conform_vllm_request

__all__ = ["DIALECTS", "Dialect", "dialect_of"]


class _Conform(Protocol):
    def __call__(self, body: bytes, status: int) -> bytes: ...


def _unchanged(body: bytes, status: int) -> bytes:
    return body


class _ConformRequest(Protocol):
    def __call__(self, path: str, body: bytes) -> bytes: ...


def _request_unchanged(path: str, body: bytes) -> bytes:
    return body


@dataclass(frozen=True, slots=True)
class Dialect:
    name: str
    conform_answer: _Conform
    """A non-streamed body (with its HTTP status) in OpenAI's shape."""
    renames_reasoning: bool = False
    """Streamed chunks name thinking ``reasoning``: rename it to ``reasoning_content``."""
    conform_request: _ConformRequest = _request_unchanged
    """A request body (validated by the gateway) for ``path``, in the names this engine
    reads (vLLM: the reasoning controls)."""


DIALECTS: dict[str, Dialect] = {
    "openai": Dialect("openai", _unchanged),
    "vllm": Dialect(
        "vllm", conform_vllm_answer, renames_reasoning=True, conform_request=conform_vllm_request
    ),
}


def dialect_of(name: str) -> Dialect:
    """The dialect called ``name``; an unknown one is treated as OpenAI's own."""
    return DIALECTS.get(name) or DIALECTS["openai"]
