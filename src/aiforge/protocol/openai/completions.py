"""``/v1/completions`` (legacy text completions): request and response bodies."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from aiforge.protocol.openai.common import (
    RequestModel,
    ResponseModel,
    StopParam,
    StreamOptions,
    Usage,
)

Prompt = str | list[str] | list[int] | list[list[int]]


class CompletionRequest(RequestModel):
    model: str
    prompt: Prompt
    suffix: str | None = None
    max_tokens: int | None = Field(default=16, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    n: int = Field(default=1, ge=1, le=128)
    best_of: int | None = Field(default=None, ge=1, le=128)
    stream: bool = False
    stream_options: StreamOptions | None = None
    logprobs: int | None = Field(default=None, ge=0, le=5)
    echo: bool = False
    stop: StopParam = None
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    seed: int | None = None
    user: str | None = None
    # Extensions (as in vLLM).
    top_k: int | None = Field(default=None, ge=-1)
    repetition_penalty: float | None = Field(default=None, gt=0.0)
    ignore_eos: bool = False
    logit_bias: dict[str, float] | None = None


class CompletionLogprobs(ResponseModel):
    nullable_fields = frozenset({"bytes"})
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionChoice(ResponseModel):
    nullable_fields = frozenset({"logprobs", "finish_reason"})
    index: int
    text: str
    logprobs: CompletionLogprobs | None
    finish_reason: Literal["stop", "length", "content_filter"] | None


class CompletionResponse(ResponseModel):
    """Also each streamed chunk (OpenAI uses the same object for both)."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None
