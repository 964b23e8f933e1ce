"""``/v1/responses``: the request body of OpenAI's Responses API, as far as aiforge serves it.

The gateway answers a Responses request by translating it onto a chat completion
(:mod:`aiforge.gateway.responses`), so these models accept what that translation can carry:
text and message input (``input_text``, ``input_image``, ``output_text`` parts), function
calls and their outputs, reasoning items, function tools, ``tool_choice``, ``text.format``,
``reasoning``, ``max_output_tokens`` and stored state (``store``,
``previous_response_id``). What it cannot carry — built-in tools, background mode,
conversations, prompt templates — is refused by :func:`refuse_unsupported` with a 400 that
names the parameter, before validation, so the message says "not supported" rather than
"invalid". Unknown fields are ignored, as everywhere in aiforge's OpenAI API.

:func:`parse_create_request` is the one entry point: JSON bytes in, a checked
:class:`CreateResponseRequest` out, or an :class:`OpenAIError` naming the parameter
(``input[1].content[0].text``, OpenAI's spelling).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import Discriminator, Field, Tag, ValidationError

from aiforge.protocol.openai.common import Bool, Float, Int, RequestModel
from aiforge.protocol.openai.errors import OpenAIError, invalid_param

MAX_METADATA_KEYS = 16
MAX_METADATA_KEY_LENGTH = 64
MAX_METADATA_VALUE_LENGTH = 512
FUNCTION_NAME_PATTERN = r"^[a-zA-Z0-9_.-]+$"
SUPPORTED_INCLUDES = frozenset({"message.output_text.logprobs", "reasoning.encrypted_content"})
"""``include`` values taken (and ignored: aiforge has no logprobs here and never encrypts
reasoning, whose text it returns in the item itself)."""
ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]
ItemStatus = Literal["in_progress", "completed", "incomplete"]

# -- content parts ---------------------------------------------------------------


class InputTextPart(RequestModel):
    type: Literal["input_text"]
    text: str


class InputImagePart(RequestModel):
    type: Literal["input_image"]
    image_url: str = Field(min_length=1)
    """A data URL or an http(s) URL (a ``file_id`` image is not served)."""
    detail: Literal["low", "high", "auto"] = "auto"


class OutputTextPart(RequestModel):
    type: Literal["output_text"]
    text: str
    annotations: list[Any] = Field(default_factory=list)


class RefusalPart(RequestModel):
    type: Literal["refusal"]
    refusal: str


ContentPart = Annotated[
    InputTextPart | InputImagePart | OutputTextPart | RefusalPart, Field(discriminator="type")
]


class SummaryTextPart(RequestModel):
    type: Literal["summary_text"]
    text: str


class ReasoningTextPart(RequestModel):
    type: Literal["reasoning_text"]
    text: str


# -- input items -----------------------------------------------------------------


class MessageItem(RequestModel):
    """A message (``type`` may be left out: OpenAI's "easy input message")."""

    type: Literal["message"] = "message"
    id: str | None = None
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[ContentPart]
    status: ItemStatus | None = None


class FunctionCallItem(RequestModel):
    """A function call the model made earlier, sent back with its output."""

    type: Literal["function_call"]
    id: str | None = None
    call_id: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1)
    arguments: str
    status: ItemStatus | None = None


class FunctionCallOutputItem(RequestModel):
    type: Literal["function_call_output"]
    id: str | None = None
    call_id: str = Field(min_length=1, max_length=64)
    output: str | list[InputTextPart]
    status: ItemStatus | None = None

    def text(self) -> str:
        if isinstance(self.output, str):
            return self.output
        return "".join(part.text for part in self.output)


class ReasoningItem(RequestModel):
    """Thinking from an earlier turn (given back to the model's template with the turn)."""

    type: Literal["reasoning"]
    id: str | None = None
    summary: list[SummaryTextPart] = Field(default_factory=list)
    content: list[ReasoningTextPart] | None = None
    encrypted_content: str | None = None
    status: ItemStatus | None = None

    def text(self) -> str:
        parts = self.content or self.summary
        return "".join(part.text for part in parts)


def _item_type(value: Any) -> str | None:
    if isinstance(value, dict):
        kind = value.get("type", "message")
        return kind if isinstance(kind, str) else None
    return getattr(value, "type", None)


RequestItem = MessageItem | FunctionCallItem | FunctionCallOutputItem | ReasoningItem
InputItem = Annotated[
    Annotated[MessageItem, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")]
    | Annotated[ReasoningItem, Tag("reasoning")],
    Discriminator(_item_type),
]

# -- tools, formats, reasoning ---------------------------------------------------


class FunctionTool(RequestModel):
    type: Literal["function"]
    name: str = Field(min_length=1, max_length=64, pattern=FUNCTION_NAME_PATTERN)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: Bool | None = None
    """OpenAI's default for Responses function tools is strict (``True``)."""


class ToolChoiceFunction(RequestModel):
    type: Literal["function"]
    name: str = Field(min_length=1)


ToolChoice = Literal["none", "auto", "required"] | ToolChoiceFunction


class TextFormatText(RequestModel):
    type: Literal["text"]


class TextFormatJsonObject(RequestModel):
    type: Literal["json_object"]


class TextFormatJsonSchema(RequestModel):
    type: Literal["json_schema"]
    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_-]+$")
    schema_: dict[str, Any] = Field(alias="schema")
    description: str | None = None
    strict: Bool | None = None


TextFormat = Annotated[
    TextFormatText | TextFormatJsonObject | TextFormatJsonSchema, Field(discriminator="type")
]


class TextConfig(RequestModel):
    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class ReasoningConfig(RequestModel):
    effort: ReasoningEffort | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None
    """Accepted; aiforge returns the thinking itself (``reasoning_text``), never a summary."""
    generate_summary: Literal["auto", "concise", "detailed"] | None = None


# -- the request -----------------------------------------------------------------


class CreateResponseRequest(RequestModel):
    model: str = Field(min_length=1)
    input: str | list[InputItem] = Field(min_length=1)
    instructions: str | None = None
    previous_response_id: str | None = Field(default=None, min_length=1, max_length=64)
    store: Bool = True
    stream: Bool = False
    tools: list[FunctionTool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: Bool = True
    text: TextConfig | None = None
    reasoning: ReasoningConfig | None = None
    max_output_tokens: Int | None = Field(default=None, ge=1)
    temperature: Float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: Float | None = Field(default=None, gt=0.0, le=1.0)
    metadata: dict[str, Annotated[str, Field(max_length=MAX_METADATA_VALUE_LENGTH)]] | None = None
    user: str | None = None
    include: list[str] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    service_tier: str | None = None
    max_tool_calls: Int | None = Field(default=None, ge=1)
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None

    def input_items(self) -> list[RequestItem]:
        """``input`` as items (a string is one user message)."""
        if isinstance(self.input, str):
            return [MessageItem(role="user", content=self.input)]
        return list(self.input)

    def function_names(self) -> list[str]:
        return [tool.name for tool in self.tools or ()]


# -- parsing -------------------------------------------------------------------

_UNSUPPORTED_FIELDS = {
    "conversation": "conversations are not supported; use `previous_response_id`",
    "prompt": "prompt templates are not supported; send `input` and `instructions`",
    "context_management": "context management is not supported",
    "top_logprobs": "log probabilities are not supported by the Responses API here",
}


def parse_create_request(body: bytes) -> CreateResponseRequest:
    """The checked request in ``body``, or a 400 :class:`OpenAIError` naming the parameter."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise OpenAIError("The request body is not valid JSON.", code="invalid_json") from None
    if not isinstance(data, dict):
        raise OpenAIError("The request body must be a JSON object.", code="invalid_json")
    refuse_unsupported(data)
    try:
        request = CreateResponseRequest.model_validate(data)
    except ValidationError as error:
        raise validation_error(error) from None
    _check_consistency(request)
    return request


def refuse_unsupported(data: dict[str, Any]) -> None:
    """A 400 naming the first feature in ``data`` that the gateway cannot serve."""
    for name, why in _UNSUPPORTED_FIELDS.items():
        if data.get(name) is not None:
            raise invalid_param(f"`{name}`: {why}.", name, code="unsupported_parameter")
    if data.get("background") is True:
        raise invalid_param(
            "Background mode is not supported: send the request without `background` "
            "(or with `stream: true` to receive the answer as it is made).",
            "background",
            code="unsupported_parameter",
        )
    tools = data.get("tools")
    if isinstance(tools, list):
        for index, tool in enumerate(tools):
            kind = tool.get("type") if isinstance(tool, dict) else None
            if isinstance(kind, str) and kind != "function":
                raise invalid_param(
                    f"Built-in tool type {kind!r} is not supported: only `function` tools "
                    "are (the model calls them; your code runs them).",
                    f"tools[{index}].type",
                    code="unsupported_tool",
                )
    choice = data.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") not in (None, "function"):
        raise invalid_param(
            f"tool_choice type {choice.get('type')!r} is not supported: use `none`, `auto`, "
            '`required` or `{"type": "function", "name": ...}`.',
            "tool_choice",
            code="unsupported_parameter",
        )
    _refuse_unsupported_items(data.get("input"))
    include = data.get("include")
    if isinstance(include, list):
        for index, value in enumerate(include):
            if not isinstance(value, str) or value not in SUPPORTED_INCLUDES:
                raise invalid_param(
                    f"include value {value!r} is not supported.",
                    f"include[{index}]",
                    code="unsupported_parameter",
                )


def _refuse_unsupported_items(items: Any) -> None:
    if not isinstance(items, list):
        return
    known = {"message", "function_call", "function_call_output", "reasoning"}
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            continue
        kind = item.get("type", "message")
        if isinstance(kind, str) and kind not in known:
            raise invalid_param(
                f"Input item type {kind!r} is not supported: send messages, function calls, "
                "function call outputs and reasoning items.",
                f"input[{index}].type",
                code="unsupported_parameter",
            )
        if item.get("encrypted_content") is not None:
            raise invalid_param(
                "Encrypted reasoning is not supported (aiforge returns reasoning as text).",
                f"input[{index}].encrypted_content",
                code="unsupported_parameter",
            )
        content = item.get("content")
        if kind == "message" and isinstance(content, list):
            for part_index, part in enumerate(content):
                if isinstance(part, dict) and part.get("type") == "input_file":
                    raise invalid_param(
                        "File inputs are not supported; send the text as `input_text`.",
                        f"input[{index}].content[{part_index}].type",
                        code="unsupported_parameter",
                    )


def _check_consistency(request: CreateResponseRequest) -> None:
    metadata = request.metadata or {}
    if len(metadata) > MAX_METADATA_KEYS:
        raise invalid_param(f"metadata has at most {MAX_METADATA_KEYS} keys.", "metadata")
    for key in metadata:
        if len(key) > MAX_METADATA_KEY_LENGTH:
            raise invalid_param(
                f"metadata keys are at most {MAX_METADATA_KEY_LENGTH} characters.", "metadata"
            )
    choice = request.tool_choice
    names = request.function_names()
    if isinstance(choice, ToolChoiceFunction) and choice.name not in names:
        raise invalid_param(
            f"tool_choice names the function {choice.name!r}, which is not in `tools`.",
            "tool_choice",
        )
    if choice == "required" and not names:
        raise invalid_param("tool_choice `required` needs at least one tool in `tools`.",
                            "tool_choice")  # fmt: skip
    if len(set(names)) != len(names):
        raise invalid_param("Function names in `tools` must be unique.", "tools")
    if request.truncation == "auto":
        raise invalid_param(
            "truncation `auto` is not supported: the request fails when the input does not "
            "fit the model's context (`disabled`).",
            "truncation",
            code="unsupported_parameter",
        )


def validation_error(error: ValidationError) -> OpenAIError:
    """The problem pydantic found, as a 400 naming the parameter OpenAI's way. Of a union's
    errors the deepest is the one meant (a message item's bad part, not "not a string")."""
    first = max(error.errors(), key=lambda found: len(found.get("loc", ())))
    param = _param_path(first.get("loc", ()))
    message = str(first.get("msg", "invalid value"))
    return invalid_param(f"{param}: {message}" if param else message, param or "body")


def _param_path(location: tuple[int | str, ...]) -> str:
    """``("input", "list[...]", 0, "message", "content")`` → ``input[0].content``: the union
    members pydantic names in a location (types, tags) are dropped."""
    path = ""
    previous: int | str | None = None
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        elif not _is_union_member(part, previous):
            path += f".{part}" if path else part
        previous = part
    return path


def _is_union_member(part: str, previous: int | str | None) -> bool:
    if part == "str" or "[" in part or part[:1].isupper():
        return True
    if isinstance(previous, int):
        return part in _ITEM_TAGS
    return previous == "format" and part in _FORMAT_TAGS


_ITEM_TAGS = frozenset(
    {"message", "function_call", "function_call_output", "reasoning", "input_text",
     "input_image", "output_text", "refusal"}
)  # fmt: skip
_FORMAT_TAGS = frozenset({"text", "json_object", "json_schema"})
