"""The prefix-cache benchmark's pure parts: system prompts, chat turns, the report."""

from __future__ import annotations

import pytest
from prefix_cache import ChatSample, ModeResult, chat_turns, report, system_prompt
from transformers import AutoTokenizer

from aiforge.testing.models import qwen3_tokenizer_dir


def test_system_prompts_have_the_asked_length_and_differ_by_seed() -> None:
    tokenizer = AutoTokenizer.from_pretrained(qwen3_tokenizer_dir())
    a = system_prompt(tokenizer, 500, seed=1)
    assert abs(len(tokenizer.encode(a, add_special_tokens=False)) - 500) <= 2
    assert system_prompt(tokenizer, 500, seed=1) == a
    assert system_prompt(tokenizer, 500, seed=2) != a


def test_turn_two_extends_turn_one() -> None:
    first = chat_turns("doc", None)
    second = chat_turns("doc", "an answer")
    assert second[: len(first)] == first
    assert second[len(first)] == {"role": "assistant", "content": "an answer"}
    assert second[-1]["role"] == "user"


def test_report_gives_the_ratio_and_the_verdict() -> None:
    on = ModeResult(
        "llamacpp", True, [ChatSample(2.0, 0.2, 2100, 2040), ChatSample(4.0, 0.4, 2100, 2030)]
    )
    off = ModeResult(
        "llamacpp", False, [ChatSample(2.0, 2.2, 2100, 0), ChatSample(4.0, 4.4, 2100, 0)]
    )
    assert on.ratio == pytest.approx(0.1)
    text = report([on, off])
    assert "| llamacpp | on | 3.000 | 0.300 | **0.100** | 2030 / 2100 |" in text
    assert "meets the target of 0.2" in text
    assert "without / with the cache = 11.0x" in text
