"""Reasoning controls: OpenAI's ``reasoning_effort`` and Qwen's ``enable_thinking`` /
``thinking_budget`` (Alibaba Model Studio's names) folded into one :class:`ThinkingPlan`.

Every engine honours the same plan, so this is the one place the rules live (pure; no I/O):

* Thinking is **off** when ``enable_thinking`` is false; when ``enable_thinking`` is not
  given, when ``reasoning_effort`` is ``"none"`` or ``thinking_budget`` is 0. Otherwise it is
  **on** when anything asked for it, or left to the model (Qwen3 thinks by default) when
  nothing was said.
* ``enable_thinking`` may come top-level (Alibaba) or in ``chat_template_kwargs`` (vLLM,
  Qwen's model card); given in both with different values it is a 400.
* The **budget** (reasoning tokens before the engine closes the think block itself) is
  ``thinking_budget`` when given, else the effort's (:data:`EFFORT_BUDGETS`), else none
  (the model thinks until it closes the block or ``max_tokens`` runs out).
* With thinking off a budget is ignored (Alibaba's rule: the budget only applies to
  thinking); ``enable_thinking: true`` beats ``reasoning_effort: "none"``.
* On a model that does not think, all of this changes nothing (and is no error: whether a
  model thinks is a property of its weights, which no request check can see).

Invalid values (an unknown effort, a negative or non-integer budget, a non-boolean
``enable_thinking``) raise a 400 :class:`OpenAIError` naming the parameter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol, get_args

from aiforge.protocol.openai.errors import invalid_param

__all__ = [
    "EFFORT_BUDGETS",
    "MAX_THINKING_BUDGET",
    "REASONING_EFFORTS",
    "ReasoningEffort",
    "ThinkingFields",
    "ThinkingPlan",
    "enable_thinking_of",
    "thinking_for",
    "thinking_from_body",
    "thinking_of",
]

ReasoningEffort = Literal["none", "minimal", "low", "medium", "high"]
REASONING_EFFORTS: Final[tuple[str, ...]] = get_args(ReasoningEffort)

EFFORT_BUDGETS: Final[Mapping[str, int | None]] = {
    "minimal": 256,
    "low": 1024,
    "medium": 4096,
    "high": None,
}
"""Reasoning tokens each effort allows (``"none"`` turns thinking off; ``"high"``: no cap)."""

MAX_THINKING_BUDGET: Final = 2**31 - 1
"""The largest ``thinking_budget`` taken (engines keep it in a 32-bit counter)."""


@dataclass(frozen=True, slots=True)
class ThinkingPlan:
    """What a request asks of a thinking model."""

    enabled: bool | None = None
    """True/False as asked; None when the request said nothing (the model's default)."""
    budget: int | None = None
    """Reasoning tokens allowed while thinking; None: no cap. Meaningless when disabled."""

    @property
    def engine_budget(self) -> int | None:
        """The cap an engine enforces: 0 when thinking is off (a template that opens
        ``<think>`` regardless then gets it closed at once), else :attr:`budget`."""
        return 0 if self.enabled is False else self.budget

    @property
    def template_enable_thinking(self) -> bool:
        """The chat template's ``enable_thinking``: on unless turned off (Qwen3's default)."""
        return self.enabled is not False


def thinking_for(
    effort: str | None, enable_thinking: bool | None, thinking_budget: int | None
) -> ThinkingPlan:
    """The plan for these three request parameters (see the module docstring for the rules).

    ``enable_thinking`` is the one value of both places it may come from
    (:func:`enable_thinking_of`). Raises a 400 naming the parameter for an invalid value.
    """
    _check_effort(effort)
    _check_budget(thinking_budget)
    if enable_thinking is not None and not isinstance(enable_thinking, bool):
        raise invalid_param("`enable_thinking` must be a boolean.", "enable_thinking")
    if enable_thinking is None:
        enabled = _implied_enabled(effort, thinking_budget)
    else:
        enabled = enable_thinking
    if enabled is False:
        return ThinkingPlan(enabled=False, budget=None)
    if thinking_budget is not None:
        return ThinkingPlan(enabled=enabled, budget=thinking_budget)
    budget = EFFORT_BUDGETS.get(effort) if effort is not None else None
    return ThinkingPlan(enabled=enabled, budget=budget)


def _implied_enabled(effort: str | None, thinking_budget: int | None) -> bool | None:
    if effort == "none" or thinking_budget == 0:
        return False
    if effort is not None or thinking_budget is not None:
        return True
    return None


def enable_thinking_of(top_level: Any, template_kwargs: Any) -> bool | None:
    """``enable_thinking`` from the top level and from ``chat_template_kwargs`` (a mapping or
    None): one value, or a 400 when both are given and differ, or either is not a boolean."""
    nested = template_kwargs.get("enable_thinking") if isinstance(template_kwargs, dict) else None
    if top_level is not None and not isinstance(top_level, bool):
        raise invalid_param("`enable_thinking` must be a boolean.", "enable_thinking")
    if nested is not None and not isinstance(nested, bool):
        raise invalid_param(
            "`chat_template_kwargs.enable_thinking` must be a boolean.",
            "chat_template_kwargs.enable_thinking",
        )
    if top_level is not None and nested is not None and top_level != nested:
        raise invalid_param(
            "`enable_thinking` and `chat_template_kwargs.enable_thinking` disagree; give one.",
            "enable_thinking",
        )
    return top_level if top_level is not None else nested


def thinking_from_body(data: Mapping[str, Any]) -> ThinkingPlan:
    """The plan of a raw chat request body (parsed JSON), with the same checks as the
    typed request model: for layers that forward bodies without parsing them (the gateway)."""
    effort = data.get("reasoning_effort")
    if effort is not None and not isinstance(effort, str):
        raise invalid_param(_EFFORT_MESSAGE, "reasoning_effort")
    budget = data.get("thinking_budget")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int)):
        raise invalid_param(_BUDGET_MESSAGE, "thinking_budget")
    enabled = enable_thinking_of(data.get("enable_thinking"), data.get("chat_template_kwargs"))
    return thinking_for(effort, enabled, budget)


_EFFORT_MESSAGE = f"`reasoning_effort` must be one of {', '.join(REASONING_EFFORTS)}."
_BUDGET_MESSAGE = f"`thinking_budget` must be an integer from 0 to {MAX_THINKING_BUDGET}."


def _check_effort(effort: str | None) -> None:
    if effort is not None and effort not in REASONING_EFFORTS:
        raise invalid_param(_EFFORT_MESSAGE, "reasoning_effort")


def _check_budget(budget: int | None) -> None:
    if budget is None:
        return
    if isinstance(budget, bool) or not isinstance(budget, int):
        raise invalid_param(_BUDGET_MESSAGE, "thinking_budget")
    if not 0 <= budget <= MAX_THINKING_BUDGET:
        raise invalid_param(_BUDGET_MESSAGE, "thinking_budget")


class ThinkingFields(Protocol):
    """The reasoning fields of a typed chat request (``ChatCompletionRequest``)."""

    @property
    def reasoning_effort(self) -> str | None: ...
    @property
    def enable_thinking(self) -> bool | None: ...
    @property
    def thinking_budget(self) -> int | None: ...
    @property
    def chat_template_kwargs(self) -> dict[str, Any] | None: ...


def thinking_of(request: ThinkingFields) -> ThinkingPlan:
    """The plan of a typed chat request (whose fields pydantic has checked already)."""
    enabled = enable_thinking_of(request.enable_thinking, request.chat_template_kwargs)
    return thinking_for(request.reasoning_effort, enabled, request.thinking_budget)
