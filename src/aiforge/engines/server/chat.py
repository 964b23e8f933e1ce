"""``/v1/chat/completions``: prompt from the chat template, sequences, parsed output."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from aiforge.engines.core import TokenConstraint
from aiforge.engines.server.chat_output import ChatParts, ChatSequenceOutput, MessageBuilder
from aiforge.engines.server.context import ReplicaContext, request_id
from aiforge.engines.server.generation import (
    CLIENT_CLOSED_STATUS,
    GenerationStats,
    SequenceDelta,
    SequenceSpec,
    merge_streams,
    run_sequence,
    sequence_params,
)
from aiforge.engines.server.grammar import GrammarConstraint
from aiforge.engines.server.images import request_images, template_content
from aiforge.engines.server.logprobs import chat_logprobs
from aiforge.engines.server.params import (
    RequestedSampling,
    build_sampling_params,
    normalize_stop,
    resolve_max_tokens,
)
from aiforge.engines.server.reasoning import prompt_thinking_state
from aiforge.engines.server.sse import DONE, error_event, event
from aiforge.engines.server.stream_options import usage_modes
from aiforge.engines.server.thinking import ThinkingConstraint, ThinkingTracker, ThinkMarkers
from aiforge.protocol.openai.chat import (
    ChatChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatMessage,
    ChatStreamChoice,
    ChoiceLogprobs,
    DeltaMessage,
    ResponseFormatJsonObject,
    ResponseFormatJsonSchema,
)
from aiforge.protocol.openai.common import CompletionTokensDetails, Usage
from aiforge.protocol.openai.errors import OpenAIError, invalid_param
from aiforge.protocol.openai.reasoning import thinking_of

ENDPOINT = "chat"


@dataclass(slots=True)
class ChatPlan:
    """A validated chat request, ready to run."""

    id: str
    created: int
    specs: list[SequenceSpec]
    stats: GenerationStats
    reasoning_start: str
    parse_tools: bool
    top_logprobs: int | None
    include_usage: bool
    continuous_usage: bool = False
    """Usage so far on every chunk (``stream_options.continuous_usage_stats``)."""
    thinking: list[ThinkingTracker] | None = None
    """Per sequence: counts its reasoning tokens (None: the model has no think markers)."""

    def track(self, delta: SequenceDelta) -> None:
        """Follow a sequence's new tokens through its think block."""
        if self.thinking is not None:
            tracker = self.thinking[delta.index]
            for token in delta.tokens:
                tracker.push(token.token_id)

    def usage(self) -> Usage:
        """The usage so far, with the reasoning tokens of every sequence."""
        usage = self.stats.usage()
        reasoning = sum(t.reasoning_tokens for t in self.thinking or ())
        usage.completion_tokens_details = CompletionTokensDetails(reasoning_tokens=reasoning)
        return usage


class ChatService:
    """Handles chat completions for one replica (kept on ``app.state.chat``)."""

    def __init__(self, ctx: ReplicaContext) -> None:
        self._ctx = ctx
        self._markers = ThinkMarkers.of(ctx.tokenizer)

    async def create(
        self, request: ChatCompletionRequest
    ) -> ChatCompletionResponse | AsyncIterator[bytes]:
        """The whole response, or (``stream``) the SSE byte stream. Raises OpenAIError."""
        plan = await self._plan(request)
        if request.stream:
            return self._stream(plan)
        return await self._complete(plan)

    # -- preparing -----------------------------------------------------------

    async def _plan(self, request: ChatCompletionRequest) -> ChatPlan:
        ctx = self._ctx
        ctx.check_model(request.model)
        _validate(request)
        ctx.limits.check_sequences(1, request.n)
        template = _request_template(ctx, request)
        tool_choice = _tool_choice(request)
        thinking = thinking_of(request)
        # Templating and tokenizing a big request take seconds: never on the event loop.
        images = await asyncio.to_thread(
            request_images, ctx.engine, request.messages, ctx.limits, ctx.served_model_name
        )
        prompt_text, prompt_ids = await asyncio.to_thread(
            _prepare_prompt, ctx, request, template, offer_tools=tool_choice != "none"
        )
        prompt_ids = images.expand(prompt_ids, ctx.limits)
        max_tokens = resolve_max_tokens(
            request.max_completion_tokens or request.max_tokens,
            prompt_tokens=len(prompt_ids),
            max_model_len=ctx.max_model_len,
            prompt_param="messages",
        )
        reasoning_start = prompt_thinking_state(prompt_text)
        constraint = await self._constraint_factory(
            request, tool_choice, reasoning_start, thinking.engine_budget
        )
        top = request.top_logprobs or 0 if request.logprobs else None
        base = build_sampling_params(
            _requested(request, top),
            ctx.defaults,
            max_tokens=max_tokens,
            vocab_size=ctx.engine.info.vocab_size,
        )
        rid = request_id("chatcmpl")
        include_usage, continuous_usage = usage_modes(request.stream_options)
        stops = normalize_stop(request.stop)
        specs = [
            SequenceSpec(
                f"{rid}-{i}",
                i,
                prompt_ids,
                sequence_params(base, i),
                stops,
                constraint,
                images=images.inputs,
            )
            for i in range(request.n)
        ]
        return ChatPlan(
            id=rid,
            created=int(time.time()),
            specs=specs,
            stats=GenerationStats(prompt_tokens=len(prompt_ids)),
            reasoning_start=reasoning_start,
            parse_tools=bool(request.tools) and tool_choice != "none",
            top_logprobs=top,
            include_usage=include_usage,
            continuous_usage=continuous_usage,
            thinking=None
            if self._markers is None
            else [ThinkingTracker(self._markers, reasoning_start) for _ in specs],
        )

    async def _constraint_factory(
        self,
        request: ChatCompletionRequest,
        tool_choice: Any,
        reasoning_start: str,
        budget: int | None,
    ) -> Any:
        ctx = self._ctx
        grammar = None
        if tool_choice == "required" or not isinstance(tool_choice, str):
            tools = [
                (t.function.name, t.function.parameters or {"type": "object"})
                for t in request.tools or []
                if tool_choice == "required" or t.function.name == tool_choice.function.name
            ]
            ctx.limits.check_json_schema([params for _, params in tools], "tools")
            # A named tool_choice makes exactly one call (as vLLM does); "required", one or more.
            parallel = tool_choice == "required" and request.parallel_tool_calls
            grammar = await asyncio.to_thread(
                lambda: ctx.grammars().tool_calls(tools, parallel=parallel, param="tools")
            )
        elif isinstance(request.response_format, ResponseFormatJsonSchema):
            schema = request.response_format.json_schema.schema_ or {}
            ctx.limits.check_json_schema(schema, "response_format")
            grammar = await asyncio.to_thread(
                lambda: ctx.grammars().json_schema(schema, param="response_format")
            )
        elif isinstance(request.response_format, ResponseFormatJsonObject):
            grammar = await asyncio.to_thread(
                lambda: ctx.grammars().json_schema(None, param="response_format")
            )
        return self._sequence_constraint(grammar, reasoning_start, budget)

    def _sequence_constraint(
        self, grammar: Any, reasoning_start: str, budget: int | None
    ) -> Callable[[], TokenConstraint | None]:
        """Each sequence's constraint: the grammar (after the think block) and the budget."""
        info, markers = self._ctx.engine.info, self._markers
        if markers is None or reasoning_start == "content" or (grammar is None and budget is None):
            return lambda: None if grammar is None else GrammarConstraint(grammar, info.vocab_size)

        def make() -> TokenConstraint:
            answer = None if grammar is None else GrammarConstraint(grammar, info.vocab_size)
            return ThinkingConstraint(
                markers,
                start=reasoning_start,
                budget=budget,
                answer=answer,
                stop_token_ids=info.eos_token_ids,
            )

        return make

    # -- running ---------------------------------------------------------------

    def _deltas(self, plan: ChatPlan) -> AsyncIterator[SequenceDelta]:
        ctx = self._ctx
        return merge_streams(
            [run_sequence(ctx.engine, ctx.tokenizer, spec, plan.stats) for spec in plan.specs]
        )

    def _outputs(self, plan: ChatPlan) -> list[ChatSequenceOutput]:
        return [
            ChatSequenceOutput(reasoning_start=plan.reasoning_start, parse_tools=plan.parse_tools)
            for _ in plan.specs
        ]

    async def _complete(self, plan: ChatPlan) -> ChatCompletionResponse:
        outputs = self._outputs(plan)
        builders = [MessageBuilder() for _ in plan.specs]
        logprobs: list[list[Any]] = [[] for _ in plan.specs]
        finish: list[str] = ["stop"] * len(plan.specs)
        status = 500
        try:
            async with _closing(self._deltas(plan)) as deltas:
                async for delta in deltas:
                    plan.track(delta)
                    parts = outputs[delta.index].push(delta.text)
                    if delta.finish_reason is not None:
                        parts.extend(outputs[delta.index].flush())
                        finish[delta.index] = delta.finish_reason
                    builders[delta.index].add(parts)
                    if plan.top_logprobs is not None:
                        logprobs[delta.index].extend(delta.tokens)
            status = 200
        except asyncio.CancelledError:  # the client left: the engine requests are aborted
            status = CLIENT_CLOSED_STATUS
            raise
        finally:
            plan.stats.observe(self._ctx.metrics, ENDPOINT, status)
        choices = [
            ChatChoice(
                index=i,
                message=builders[i].message(),
                logprobs=self._choice_logprobs(plan, logprobs[i]),
                finish_reason=_finish_reason(finish[i], outputs[i]),
            )
            for i in range(len(plan.specs))
        ]
        return ChatCompletionResponse(
            id=plan.id,
            created=plan.created,
            model=self._ctx.served_model_name,
            choices=choices,
            usage=plan.usage(),
        )

    async def _stream(self, plan: ChatPlan) -> AsyncIterator[bytes]:
        outputs = self._outputs(plan)
        status = 500
        try:
            for spec in plan.specs:
                role = DeltaMessage(role="assistant", content="")
                yield self._event(plan, self._chunk(plan, spec.index, role))
            async with _closing(self._deltas(plan)) as deltas:
                async for delta in deltas:
                    plan.track(delta)
                    for chunk in self._delta_chunks(plan, delta, outputs[delta.index]):
                        yield self._event(plan, chunk)
            if plan.include_usage:
                usage_chunk = self._chunk(plan, None, None)
                usage_chunk.usage = plan.usage()
                yield event(usage_chunk.to_json())
            status = 200
            yield DONE
        except OpenAIError as exc:
            status = exc.status_code
            yield error_event(exc)
            yield DONE
        finally:
            plan.stats.observe(self._ctx.metrics, ENDPOINT, status)

    def _event(self, plan: ChatPlan, chunk: ChatCompletionChunk) -> bytes:
        if plan.continuous_usage:
            chunk.usage = plan.usage()
        return event(chunk.to_json())

    def _delta_chunks(
        self, plan: ChatPlan, delta: SequenceDelta, output: ChatSequenceOutput
    ) -> list[ChatCompletionChunk]:
        parts = output.push(delta.text)
        if delta.finish_reason is not None:
            parts.extend(output.flush())
        chunks = []
        lp = self._choice_logprobs(plan, delta.tokens)
        if parts or (lp is not None and lp.content):
            chunks.append(self._chunk(plan, delta.index, parts.delta(), logprobs=lp))
        if delta.finish_reason is not None:
            reason = _finish_reason(delta.finish_reason, output)
            chunks.append(self._chunk(plan, delta.index, DeltaMessage(), finish=reason))
        return chunks

    def _chunk(
        self,
        plan: ChatPlan,
        index: int | None,
        delta: DeltaMessage | None,
        *,
        logprobs: ChoiceLogprobs | None = None,
        finish: str | None = None,
    ) -> ChatCompletionChunk:
        choices = []
        if index is not None and delta is not None:
            choice = ChatStreamChoice(index=index, delta=delta, finish_reason=finish)
            if logprobs is not None:
                choice.logprobs = logprobs
            choices.append(choice)
        return ChatCompletionChunk(
            id=plan.id, created=plan.created, model=self._ctx.served_model_name, choices=choices
        )

    def _choice_logprobs(self, plan: ChatPlan, tokens: list[Any]) -> ChoiceLogprobs | None:
        if plan.top_logprobs is None:
            return None
        content = chat_logprobs(tokens, self._ctx.token_texts, plan.top_logprobs)
        return ChoiceLogprobs(content=content, refusal=None)


# -- request checks and the prompt ------------------------------------------------


def _validate(request: ChatCompletionRequest) -> None:
    if request.top_logprobs is not None and not request.logprobs:
        raise invalid_param("`top_logprobs` requires `logprobs` to be true.", "top_logprobs")
    if request.tool_choice not in (None, "none", "auto") and not request.tools:
        raise invalid_param("`tool_choice` requires `tools`.", "tool_choice")
    names = {tool.function.name for tool in request.tools or []}
    if len(names) != len(request.tools or []):
        raise invalid_param("Tool names must be unique.", "tools")
    choice = request.tool_choice
    if choice is not None and not isinstance(choice, str) and choice.function.name not in names:
        raise invalid_param(
            f"Tool choice names the function `{choice.function.name}`, which is not in `tools`.",
            "tool_choice",
        )
    for i, message in enumerate(request.messages):
        if message.role == "tool" and not message.tool_call_id:
            raise invalid_param("A tool message needs `tool_call_id`.", f"messages[{i}]")


def _tool_choice(request: ChatCompletionRequest) -> Any:
    """``auto`` when tools are given without a choice, as OpenAI does; ``none`` without tools."""
    if not request.tools:
        return "none"
    return request.tool_choice or "auto"


def _requested(request: ChatCompletionRequest, top_logprobs: int | None) -> RequestedSampling:
    return RequestedSampling(
        temperature=request.temperature,
        top_p=request.top_p,
        top_k=request.top_k,
        seed=request.seed,
        presence_penalty=request.presence_penalty,
        frequency_penalty=request.frequency_penalty,
        repetition_penalty=request.repetition_penalty,
        logprobs=top_logprobs,
        ignore_eos=request.ignore_eos,
        logit_bias=request.logit_bias,
    )


def template_messages(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    """Messages as chat templates expect them: text content, tool-call arguments as objects."""
    rendered = []
    for message in messages:
        item: dict[str, Any] = {"role": message.role, "content": template_content(message)}
        if message.role == "developer":
            item["role"] = "system"
        if message.name:
            item["name"] = message.name
        if message.tool_call_id:
            item["tool_call_id"] = message.tool_call_id
        if message.reasoning_content:
            item["reasoning_content"] = message.reasoning_content
        if message.tool_calls:
            item["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {
                        "name": call.function.name,
                        "arguments": _arguments_object(call.function.arguments),
                    },
                }
                for call in message.tool_calls
            ]
        rendered.append(item)
    return rendered


def _arguments_object(arguments: str) -> Any:
    try:
        return json.loads(arguments)
    except json.JSONDecodeError:
        return arguments


def _request_template(ctx: ReplicaContext, request: ChatCompletionRequest) -> str | None:
    """The template the request brings (``chat_template``, or under that name in
    ``chat_template_kwargs`` as vLLM takes it): untrusted code, refused unless allowed."""
    template = request.chat_template
    if template is None and request.chat_template_kwargs:
        template = request.chat_template_kwargs.get("chat_template")
    if template is None:
        return None
    if not ctx.limits.allow_request_chat_template:
        raise invalid_param(
            "This server does not take chat templates from requests; the model's own is used "
            "(an admin may allow them with AIFORGE_ALLOW_REQUEST_CHAT_TEMPLATE).",
            "chat_template",
        )
    if not isinstance(template, str):
        raise invalid_param("`chat_template` must be a string.", "chat_template")
    return template


def _prepare_prompt(
    ctx: ReplicaContext, request: ChatCompletionRequest, template: str | None, *, offer_tools: bool
) -> tuple[str, list[int]]:
    """The prompt's text and token ids, within the server's limits (a worker thread)."""
    texts = [m.text() or "" for m in request.messages]
    texts += [m.reasoning_content or "" for m in request.messages]
    texts += [c.function.arguments for m in request.messages for c in m.tool_calls or []]
    ctx.limits.check_prompt_chars(texts, "messages")
    text = render_prompt(ctx, request, offer_tools=offer_tools, template=template)
    ids = list(ctx.tokenizer.encode(text, add_special_tokens=False))
    ctx.limits.check_prompt_tokens(len(ids), "messages")
    return text, ids


def render_prompt(
    ctx: ReplicaContext,
    request: ChatCompletionRequest,
    *,
    offer_tools: bool,
    template: str | None = None,
) -> str:
    """The prompt text from the model's chat template (or ``template``, allowed already),
    rendered in the bounded sandbox of :mod:`~aiforge.engines.server.templates`.

    With ``tool_choice: "none"`` the tools are not shown to the model at all, so it answers
    in text (OpenAI's semantics). Thinking defaults to on, as in Qwen3; the reasoning
    controls (``reasoning_effort``, ``enable_thinking``, ``thinking_budget``) may turn it off
    (:func:`~aiforge.protocol.openai.reasoning.thinking_of`).
    """
    kwargs = dict(request.chat_template_kwargs or {})
    kwargs.pop("chat_template", None)
    kwargs["enable_thinking"] = thinking_of(request).template_enable_thinking
    tools: list[dict[str, Any]] | None = None
    if offer_tools and request.tools:
        tools = [tool.model_dump(exclude_none=True) for tool in request.tools]
    return ctx.templates.render(
        template_messages(request.messages), tools=tools, kwargs=kwargs, template=template
    )


def _finish_reason(reason: str, output: ChatSequenceOutput) -> str:
    return "tool_calls" if reason == "stop" and output.called_tools else reason


class _closing:
    """``contextlib.aclosing`` for an AsyncIterator typed as such (mypy-friendly)."""

    def __init__(self, stream: AsyncIterator[SequenceDelta]) -> None:
        self._stream = stream

    async def __aenter__(self) -> AsyncIterator[SequenceDelta]:
        return self._stream

    async def __aexit__(self, *exc: object) -> None:
        close = getattr(self._stream, "aclose", None)
        if close is not None:
            await close()


__all__ = ["ChatParts", "ChatService", "render_prompt", "template_messages"]
