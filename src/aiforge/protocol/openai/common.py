"""Pieces shared by several OpenAI endpoints: usage, stream options, stop strings."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

MAX_STOP_STRINGS = 4


class RequestModel(BaseModel):
    """Base of every request body: unknown fields are ignored, as OpenAI clients send extras."""

    model_config = ConfigDict(extra="ignore")


class ResponseModel(BaseModel):
    """Base of every response body.

    A field whose value is ``None`` is omitted from the JSON (OpenAI's schema forbids
    ``null`` for many optional fields) unless it is listed in ``nullable_fields``: those
    are required by the schema and written as ``null``.
    """

    model_config = ConfigDict(extra="forbid")
    nullable_fields: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _omit_none(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        keep = self.nullable_fields
        return {k: v for k, v in data.items() if v is not None or k in keep}

    def to_json(self) -> str:
        return self.model_dump_json()


class StreamOptions(RequestModel):
    include_usage: bool = False
    """A final chunk with empty ``choices`` carries the request's usage."""
    continuous_usage_stats: bool = False
    """vLLM's extension: with ``include_usage`` every chunk also carries the usage so far
    (the gateway asks replicas for it so a cancelled stream is metered exactly)."""


StopParam = str | Annotated[list[str], Field(max_length=MAX_STOP_STRINGS)] | None


class PromptTokensDetails(ResponseModel):
    cached_tokens: int


class Usage(ResponseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None


def make_usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int | None) -> Usage:
    """Usage with ``prompt_tokens_details`` only when the engine reported cache hits."""
    usage = Usage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
    )
    if cached_tokens is not None:
        usage.prompt_tokens_details = PromptTokensDetails(cached_tokens=cached_tokens)
    return usage
