"""Make a vLLM replica's non-streamed answers speak OpenAI's exact dialect.

vLLM's bodies are close to OpenAI's but not the same: its messages carry
``"annotations": null`` and ``"function_call": null`` and its usage
``"prompt_tokens_details": null``, where OpenAI's schema wants the member absent or an
object; thinking comes as ``reasoning`` instead of ``reasoning_content``; and its error
envelopes carry the HTTP status as an integer ``code``, an exception class name as ``type``
and often no ``param``. Clients that validate responses (or switch on ``error.code``) break on
those, so the gateway rewrites vLLM's non-streamed bodies here — pure functions on bytes,
applied only to replicas whose engine is vLLM. Streamed chunks only need the reasoning rename
(:func:`aiforge.gateway.metering.with_reasoning_content`), done by the stream meter.

Requests need one translation (:func:`conform_vllm_request`): the reasoning controls. vLLM
0.32 enforces a thinking budget itself (``thinking_token_budget``, with the ``qwen3``
reasoning parser the replica is started with) and reads ``enable_thinking`` only from
``chat_template_kwargs``; aiforge's own names (``enable_thinking`` top-level,
``thinking_budget``, the budgets of ``reasoning_effort``) are mapped onto those with the one
rule of :mod:`aiforge.protocol.openai.reasoning`. vLLM reports
``usage.completion_tokens_details.reasoning_tokens`` itself (its reasoning parser counts the
tokens between the markers, as aiforge's engines do), so answers need nothing for it.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from aiforge.gateway.metering import with_reasoning_content
from aiforge.protocol.openai.errors import OpenAIError
from aiforge.protocol.openai.reasoning import thinking_from_body

__all__ = ["conform_vllm_answer", "conform_vllm_request"]

_REASONING_FIELDS = (b'"reasoning_effort"', b'"enable_thinking"', b'"thinking_budget"')

_NULL_MESSAGE_MEMBERS = ("annotations", "function_call", "audio")
_NULL_USAGE_MEMBERS = ("prompt_tokens_details", "completion_tokens_details")

_OPENAI_ERROR_TYPES = frozenset(
    {"invalid_request_error", "authentication_error", "permission_error", "not_found_error",
     "rate_limit_error", "server_error", "tokens", "requests"}
)  # fmt: skip

# Request fields a vLLM error message may name, most specific first: the first one named in
# the message becomes the error's ``param``.
_PARAMS = (
    "response_format", "tool_choice", "tools", "max_completion_tokens", "max_tokens",
    "temperature", "top_p", "top_k", "presence_penalty", "frequency_penalty",
    "repetition_penalty", "logprobs", "top_logprobs", "stream_options", "logit_bias", "seed",
    "stop", "n", "messages", "prompt", "input", "model",
)  # fmt: skip
_PARAM_PATTERNS = tuple((name, re.compile(rf"\b{name}\b")) for name in _PARAMS)
_CONTEXT_LENGTH = re.compile(r"maximum context length|context length", re.IGNORECASE)
_SCHEMA_WORDS = re.compile(r"json[_ ]schema|grammar|guided|structured output", re.IGNORECASE)


def conform_vllm_answer(body: bytes, status: int) -> bytes:
    """``body`` (a vLLM replica's non-streamed answer with HTTP ``status``) in OpenAI's shape.

    Bodies that are not JSON objects pass through unchanged.
    """
    body = with_reasoning_content(body)
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    if not isinstance(data, dict):
        return body
    changed = _drop_null_members(data) if status == 200 else _conform_error(data, status)
    return orjson.dumps(data) if changed else body


def _drop_null_members(data: dict[str, Any]) -> bool:
    changed = False
    for choice in data.get("choices") or ():
        message = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(message, dict):
            changed |= _drop_nulls(message, _NULL_MESSAGE_MEMBERS)
    usage = data.get("usage")
    if isinstance(usage, dict):
        changed |= _drop_nulls(usage, _NULL_USAGE_MEMBERS)
    return changed


def _drop_nulls(mapping: dict[str, Any], names: tuple[str, ...]) -> bool:
    dropped = [name for name in names if name in mapping and mapping[name] is None]
    for name in dropped:
        del mapping[name]
    return bool(dropped)


def _conform_error(data: dict[str, Any], status: int) -> bool:
    error = data.get("error")
    if not isinstance(error, dict):
        return False
    message = str(error.get("message") or "")
    if error.get("type") not in _OPENAI_ERROR_TYPES:
        error["type"] = "server_error" if status >= 500 else "invalid_request_error"
    if not isinstance(error.get("code"), str | None):
        error["code"] = "context_length_exceeded" if _CONTEXT_LENGTH.search(message) else None
    if _CONTEXT_LENGTH.search(message):
        # vLLM names its own field ("input_tokens"); OpenAI points at the prompt.
        error["param"] = "messages"
    elif error.get("param") is None:
        error["param"] = _param_named_in(message)
    return True


def _param_named_in(message: str) -> str | None:
    for name, pattern in _PARAM_PATTERNS:
        if pattern.search(message):
            return name
    if _SCHEMA_WORDS.search(message):
        return "response_format"
    return None


def conform_vllm_request(path: str, body: bytes) -> bytes:
    """``body`` (a chat request for ``path``) with the reasoning controls in vLLM's names.

    ``enable_thinking`` (from either place, or implied by ``reasoning_effort`` /
    ``thinking_budget``) goes to ``chat_template_kwargs``, where vLLM's template and
    reasoning parser read it; the budget becomes ``thinking_token_budget`` (0 when thinking
    is off, so a template that opens ``<think>`` regardless gets it closed at once). Bodies
    without reasoning controls, other endpoints and bodies the gateway did not validate
    pass through unchanged.
    """
    if not path.endswith("/chat/completions") or not any(f in body for f in _REASONING_FIELDS):
        return body
    try:
        data = orjson.loads(body)
        plan = thinking_from_body(data) if isinstance(data, dict) else None
    except (orjson.JSONDecodeError, OpenAIError):
        return body
    if plan is None or (plan.enabled is None and plan.budget is None):
        return body
    data.pop("enable_thinking", None)
    data.pop("thinking_budget", None)
    if plan.enabled is not None:
        kwargs = data.get("chat_template_kwargs")
        kwargs = dict(kwargs) if isinstance(kwargs, dict) else {}
        data["chat_template_kwargs"] = {**kwargs, "enable_thinking": plan.enabled}
    if plan.engine_budget is not None:
        data["thinking_token_budget"] = plan.engine_budget
    return orjson.dumps(data)
