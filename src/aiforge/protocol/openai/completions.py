"""``/v1/completions`` (legacy text completions): request and response bodies."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from aiforge.protocol.openai.common import (
    Bool,
    Float,
    Int,
    RequestModel,
    ResponseModel,
    Seed,
    StopParam,
    StreamOptions,
    Usage,
)

Prompt = str | list[str] | list[Int] | list[list[Int]]


class CompletionRequest(RequestModel):
    model: str
    prompt: Prompt
    suffix: str | None = None
    max_tokens: Int | None = Field(default=16, ge=1)
    temperature: Float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: Float | None = Field(default=None, gt=0.0, le=1.0)
    n: Int = Field(default=1, ge=1, le=128)
    best_of: Int | None = Field(default=None, ge=1, le=128)
    stream: Bool = False
    stream_options: StreamOptions | None = None
    logprobs: Int | None = Field(default=None, ge=0, le=5)
    echo: Bool = False
    stop: StopParam = None
    presence_penalty: Float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: Float | None = Field(default=None, ge=-2.0, le=2.0)
    seed: Seed | None = None
    user: str | None = None
    # Extensions (as in vLLM).
    top_k: Int | None = Field(default=None, ge=-1, le=2**31 - 1)
    repetition_penalty: Float | None = Field(default=None, gt=0.0)
    ignore_eos: Bool = False
    logit_bias: dict[str, Float] | None = None


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
