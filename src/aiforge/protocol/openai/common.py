"""Pieces shared by several OpenAI endpoints: usage, stream options, stop strings."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StrictBool,
    model_serializer,
)

MAX_STOP_STRINGS = 4
MAX_STOP_LENGTH = 1000
"""Characters in one stop string: matching runs over every stop at every token."""
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _number_not_bool_or_text(value: Any) -> Any:
    # pydantic's lax mode reads true as 1 and "10" as 10; OpenAI refuses both.
    if isinstance(value, bool | str):
        raise ValueError("Input should be a number, not a boolean or a string")
    return value


Int = Annotated[int, BeforeValidator(_number_not_bool_or_text)]
"""An integer parameter: a JSON number with no fraction (``true`` and ``"10"`` refused)."""
Float = Annotated[float, BeforeValidator(_number_not_bool_or_text)]
"""A number parameter: finite (the models refuse NaN and infinities), never a boolean."""
Bool = StrictBool
"""A JSON boolean, nothing else (``1`` and ``"yes"`` refused)."""
Seed = Annotated[Int, Field(ge=INT64_MIN, le=INT64_MAX)]
"""A seed the engines take: within int64."""


class RequestModel(BaseModel):
    """Base of every request body: unknown fields are ignored, as OpenAI clients send extras.

    Numbers must be finite: Python's JSON parser reads ``NaN`` and ``Infinity``.
    """

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


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
    include_usage: Bool = False
    """A final chunk with empty ``choices`` carries the request's usage."""
    continuous_usage_stats: Bool = False
    """vLLM's extension: with ``include_usage`` every chunk also carries the usage so far
    (the gateway asks replicas for it so a cancelled stream is metered exactly)."""


_Stop = Annotated[str, Field(max_length=MAX_STOP_LENGTH)]
StopParam = _Stop | Annotated[list[_Stop], Field(max_length=MAX_STOP_STRINGS)] | None
"""Up to 4 stop sequences, as OpenAI takes, each of bounded length."""


class PromptTokensDetails(ResponseModel):
    cached_tokens: int


class CompletionTokensDetails(ResponseModel):
    reasoning_tokens: int
    """Generated tokens inside the think block (its ``<think>``/``</think>`` markers not
    counted); part of ``completion_tokens``."""


class Usage(ResponseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None
    completion_tokens_details: CompletionTokensDetails | None = None


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
