"""``/v1/chat/completions``: request and response bodies, streamed chunks included."""

from __future__ import annotations

from typing import Annotated, Any, Literal

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
from aiforge.protocol.openai.reasoning import MAX_THINKING_BUDGET, ReasoningEffort

# -- request -------------------------------------------------------------------


class TextContentPart(RequestModel):
    type: Literal["text"]
    text: str


class ImageUrl(RequestModel):
    url: str
    """A ``data:image/...;base64,`` URL, or an http(s) URL the gateway fetches."""
    detail: Literal["auto", "low", "high"] | None = None
    """Accepted as OpenAI takes it; the model's preprocessor decides the resolution."""


class ImageContentPart(RequestModel):
    type: Literal["image_url"]
    image_url: ImageUrl


ContentPart = Annotated[TextContentPart | ImageContentPart, Field(discriminator="type")]


class FunctionCall(RequestModel):
    name: str
    arguments: str


class ToolCall(RequestModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(RequestModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    reasoning_content: str | None = None

    def text(self) -> str | None:
        """The content as one string (text parts joined by newlines; images left out)."""
        if isinstance(self.content, list):
            return "\n".join(p.text for p in self.content if isinstance(p, TextContentPart))
        return self.content


class FunctionDefinition(RequestModel):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_.-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: Bool | None = None


class ChatTool(RequestModel):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class NamedFunction(RequestModel):
    name: str


class NamedToolChoice(RequestModel):
    type: Literal["function"] = "function"
    function: NamedFunction


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class ResponseFormatText(RequestModel):
    type: Literal["text"]


class ResponseFormatJsonObject(RequestModel):
    type: Literal["json_object"]


class JsonSchemaSpec(RequestModel):
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: Bool | None = None


class ResponseFormatJsonSchema(RequestModel):
    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


ResponseFormat = Annotated[
    ResponseFormatText | ResponseFormatJsonObject | ResponseFormatJsonSchema,
    Field(discriminator="type"),
]


class ChatCompletionRequest(RequestModel):
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: Bool = False
    stream_options: StreamOptions | None = None
    n: Int = Field(default=1, ge=1, le=128)
    stop: StopParam = None
    max_tokens: Int | None = Field(default=None, ge=1)
    max_completion_tokens: Int | None = Field(default=None, ge=1)
    temperature: Float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: Float | None = Field(default=None, gt=0.0, le=1.0)
    seed: Seed | None = None
    presence_penalty: Float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: Float | None = Field(default=None, ge=-2.0, le=2.0)
    logprobs: Bool = False
    top_logprobs: Int | None = Field(default=None, ge=0, le=20)
    tools: list[ChatTool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: Bool = True
    response_format: ResponseFormat | None = None
    user: str | None = None
    # Extensions (as in vLLM).
    top_k: Int | None = Field(default=None, ge=-1, le=2**31 - 1)
    repetition_penalty: Float | None = Field(default=None, gt=0.0)
    chat_template: str | None = None
    """A Jinja chat template to use instead of the model's: refused unless the server's
    admin allows it (``AIFORGE_ALLOW_REQUEST_CHAT_TEMPLATE``)."""
    chat_template_kwargs: dict[str, Any] | None = None
    ignore_eos: Bool = False
    logit_bias: dict[str, Float] | None = None
    # Reasoning controls (:mod:`aiforge.protocol.openai.reasoning` has the rules).
    reasoning_effort: ReasoningEffort | None = None
    enable_thinking: Bool | None = None
    """Qwen's switch (Alibaba's top-level name); also taken in ``chat_template_kwargs``."""
    thinking_budget: Int | None = Field(default=None, ge=0, le=MAX_THINKING_BUDGET)
    """Reasoning tokens before the engine closes the think block itself."""


# -- response ------------------------------------------------------------------


class TopLogprob(ResponseModel):
    nullable_fields = frozenset({"bytes"})
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprob(ResponseModel):
    nullable_fields = frozenset({"bytes"})
    token: str
    logprob: float
    bytes: list[int] | None
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(ResponseModel):
    nullable_fields = frozenset({"content", "refusal"})
    content: list[TokenLogprob] | None
    refusal: list[TokenLogprob] | None = None


class ResponseFunctionCall(ResponseModel):
    name: str
    arguments: str


class ResponseToolCall(ResponseModel):
    id: str
    type: Literal["function"] = "function"
    function: ResponseFunctionCall


class AssistantMessage(ResponseModel):
    nullable_fields = frozenset({"content", "refusal"})
    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ResponseToolCall] | None = None


class ChatChoice(ResponseModel):
    nullable_fields = frozenset({"logprobs"})
    index: int
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None
    finish_reason: Literal["stop", "length", "tool_calls", "content_filter"]


class ChatCompletionResponse(ResponseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: str | None = None


class FunctionCallDelta(ResponseModel):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(ResponseModel):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionCallDelta


class DeltaMessage(ResponseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChatStreamChoice(ResponseModel):
    nullable_fields = frozenset({"finish_reason", "logprobs"})
    index: int
    delta: DeltaMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: Literal["stop", "length", "tool_calls", "content_filter"] | None


class ChatCompletionChunk(ResponseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatStreamChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None
