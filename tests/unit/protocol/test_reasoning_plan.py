"""The reasoning controls' one mapping: effort, ``enable_thinking``, ``thinking_budget``."""

from __future__ import annotations

from typing import Any

import pytest

from aiforge.protocol.openai.chat import ChatCompletionRequest
from aiforge.protocol.openai.errors import OpenAIError
from aiforge.protocol.openai.reasoning import (
    EFFORT_BUDGETS,
    ThinkingPlan,
    enable_thinking_of,
    thinking_for,
    thinking_from_body,
    thinking_of,
)


@pytest.mark.parametrize(
    ("effort", "enable", "budget", "plan"),
    [
        # Nothing said: the model's default (Qwen3 thinks), no cap.
        (None, None, None, ThinkingPlan(None, None)),
        # Effort alone: "none" is off, the others on with their budgets.
        ("none", None, None, ThinkingPlan(False, None)),
        ("minimal", None, None, ThinkingPlan(True, EFFORT_BUDGETS["minimal"])),
        ("low", None, None, ThinkingPlan(True, EFFORT_BUDGETS["low"])),
        ("medium", None, None, ThinkingPlan(True, EFFORT_BUDGETS["medium"])),
        ("high", None, None, ThinkingPlan(True, None)),
        # The budget alone: 0 is off, anything else on with that cap.
        (None, None, 0, ThinkingPlan(False, None)),
        (None, None, 300, ThinkingPlan(True, 300)),
        # enable_thinking alone.
        (None, True, None, ThinkingPlan(True, None)),
        (None, False, None, ThinkingPlan(False, None)),
        # An explicit budget beats the effort's.
        ("low", None, 50, ThinkingPlan(True, 50)),
        ("high", None, 50, ThinkingPlan(True, 50)),
        # enable_thinking=false wins: a budget only applies to thinking (Alibaba's rule).
        (None, False, 500, ThinkingPlan(False, None)),
        ("high", False, None, ThinkingPlan(False, None)),
        # enable_thinking=true beats effort "none"; with budget 0 the block closes at once.
        ("none", True, None, ThinkingPlan(True, None)),
        (None, True, 0, ThinkingPlan(True, 0)),
        # effort "none" with a budget: the effort turns thinking off, the budget is ignored.
        ("none", None, 100, ThinkingPlan(False, None)),
    ],
)
def test_thinking_for(
    effort: str | None, enable: bool | None, budget: int | None, plan: ThinkingPlan
) -> None:
    assert thinking_for(effort, enable, budget) == plan


def test_engine_budget_is_zero_when_off_and_the_template_flag_defaults_on() -> None:
    assert ThinkingPlan(False, None).engine_budget == 0
    assert ThinkingPlan(True, 7).engine_budget == 7
    assert ThinkingPlan(None, None).engine_budget is None
    assert ThinkingPlan(None, None).template_enable_thinking is True
    assert ThinkingPlan(False, None).template_enable_thinking is False


@pytest.mark.parametrize(
    ("effort", "budget", "param"),
    [
        ("extreme", None, "reasoning_effort"),
        (None, -1, "thinking_budget"),
        (None, 2**31, "thinking_budget"),
    ],
)
def test_invalid_values_are_a_400_naming_the_param(
    effort: str | None, budget: int | None, param: str
) -> None:
    with pytest.raises(OpenAIError) as caught:
        thinking_for(effort, None, budget)
    assert caught.value.status_code == 400
    assert caught.value.param == param


def test_enable_thinking_from_both_places() -> None:
    assert enable_thinking_of(None, None) is None
    assert enable_thinking_of(False, None) is False
    assert enable_thinking_of(None, {"enable_thinking": False}) is False
    assert enable_thinking_of(True, {"enable_thinking": True}) is True
    assert enable_thinking_of(None, {"other": 1}) is None
    with pytest.raises(OpenAIError) as caught:
        enable_thinking_of(True, {"enable_thinking": False})
    assert caught.value.param == "enable_thinking"
    with pytest.raises(OpenAIError) as caught:
        enable_thinking_of(None, {"enable_thinking": "no"})
    assert caught.value.param == "chat_template_kwargs.enable_thinking"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"reasoning_effort": 3}, "reasoning_effort"),
        ({"reasoning_effort": "max"}, "reasoning_effort"),
        ({"thinking_budget": "100"}, "thinking_budget"),
        ({"thinking_budget": True}, "thinking_budget"),
        ({"thinking_budget": 1.5}, "thinking_budget"),
        ({"thinking_budget": -5}, "thinking_budget"),
        ({"enable_thinking": "yes"}, "enable_thinking"),
        ({"enable_thinking": True, "chat_template_kwargs": {"enable_thinking": False}},
         "enable_thinking"),
    ],
)  # fmt: skip
def test_raw_bodies_are_checked_like_typed_requests(body: dict[str, Any], param: str) -> None:
    with pytest.raises(OpenAIError) as caught:
        thinking_from_body(body)
    assert caught.value.status_code == 400
    assert caught.value.param == param


def test_raw_body_and_typed_request_agree() -> None:
    body: dict[str, Any] = {
        "model": "m",
        "messages": [{"role": "user", "content": "x"}],
        "reasoning_effort": "low",
        "thinking_budget": 12,
        "chat_template_kwargs": {"enable_thinking": True},
    }
    typed = thinking_of(ChatCompletionRequest.model_validate(body))
    assert typed == thinking_from_body(body) == ThinkingPlan(True, 12)
