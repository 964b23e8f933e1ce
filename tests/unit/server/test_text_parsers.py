"""Pure text-stream parsers: stop strings, reasoning split, tool calls, detokenizer."""

from __future__ import annotations

import json

import pytest
from transformers import PreTrainedTokenizerBase

from aiforge.engines.server.detokenizer import IncrementalDetokenizer, TokenTexts
from aiforge.engines.server.reasoning import ReasoningParser, prompt_thinking_state
from aiforge.engines.server.stop import StopMatcher
from aiforge.engines.server.tool_calls import ToolCallParser


def pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


@pytest.mark.parametrize("size", [1, 2, 3, 5, 100])
def test_stop_string_spanning_pieces_is_excluded(size: int) -> None:
    stop = StopMatcher(["STOP", "\n\n"])
    out = ""
    for piece in pieces("abc ST xyz STOP tail", size):
        out += stop.push(piece)
        assert "abc ST xyz ".startswith(out)
        if stop.stopped:
            break
    assert stop.stopped
    assert out == "abc ST xyz "


def test_stop_holds_back_only_possible_prefixes_and_flushes_them() -> None:
    stop = StopMatcher(["</end>"])
    assert stop.push("hello </e") == "hello "
    assert stop.push("x") == "</ex"
    assert stop.push("</") == ""
    assert stop.flush() == "</"
    assert not stop.stopped


@pytest.mark.parametrize("size", [1, 2, 4, 1000])
def test_reasoning_split_streamed(size: int) -> None:
    parser = ReasoningParser()
    reasoning = content = ""
    for piece in pieces("<think>\nStep 1.\n\nStep 2.\n</think>\n\nThe answer is 4.", size):
        delta = parser.push(piece)
        reasoning += delta.reasoning
        content += delta.content
    tail = parser.flush()
    assert reasoning + tail.reasoning == "Step 1.\n\nStep 2."
    assert content + tail.content == "The answer is 4."


def test_reasoning_when_prompt_already_opened_think() -> None:
    assert prompt_thinking_state("<|im_start|>assistant\n<think>\n") == "reasoning"
    assert prompt_thinking_state("assistant\n<think>\n\n</think>\n\n") == "content"
    assert prompt_thinking_state("<|im_start|>assistant\n") == "undecided"
    parser = ReasoningParser("reasoning")
    delta = parser.push("hmm</think>ok")
    assert (delta.reasoning, delta.content) == ("hmm", "ok")


def test_no_think_block_is_all_content() -> None:
    parser = ReasoningParser()
    assert parser.push("<thi").content == ""
    assert parser.push("ng> is not a tag").content == "<thing> is not a tag"


def collect(parser: ToolCallParser, chunks: list[str]) -> tuple[str, dict[int, dict[str, str]]]:
    content = ""
    calls: dict[int, dict[str, str]] = {}
    deltas = [parser.push(c) for c in chunks] + [parser.flush()]
    for delta in deltas:
        content += delta.content
        for fragment in delta.calls:
            call = calls.setdefault(fragment.index, {"id": "", "name": "", "arguments": ""})
            if fragment.id is not None:
                assert not call["id"], "id sent twice"
                call["id"], call["name"] = fragment.id, fragment.name or ""
            else:
                assert call["id"], "arguments before the call's first delta"
            call["arguments"] += fragment.arguments
    return content, calls


QWEN_CALLS = (
    "I'll check both.\n<tool_call>\n"
    '{"name": "get_weather", "arguments": {"city": "Paris", "opts": {"unit": "c"}}}\n'
    "</tool_call>\n<tool_call>\n"
    '{"name": "get_time", "arguments": {"tz": "CET"}}\n</tool_call>'
)


@pytest.mark.parametrize("size", [1, 2, 7, 10_000])
def test_tool_calls_streamed_in_fragments(size: int) -> None:
    content, calls = collect(ToolCallParser(), pieces(QWEN_CALLS, size))
    assert content == "I'll check both."
    assert [c["name"] for c in calls.values()] == ["get_weather", "get_time"]
    assert json.loads(calls[0]["arguments"]) == {"city": "Paris", "opts": {"unit": "c"}}
    assert json.loads(calls[1]["arguments"]) == {"tz": "CET"}
    assert calls[0]["id"].startswith("call_")
    assert calls[0]["id"] != calls[1]["id"]


def test_arguments_before_name_and_invalid_blocks() -> None:
    text = (
        '<tool_call>\n{"arguments": {"x": 1}, "name": "f"}\n</tool_call><tool_call>oops</tool_call>'
    )
    content, calls = collect(ToolCallParser(), pieces(text, 3))
    assert calls[0]["name"] == "f"
    assert json.loads(calls[0]["arguments"]) == {"x": 1}
    assert content == "<tool_call>oops</tool_call>"


def test_unterminated_call_is_completed_at_the_end() -> None:
    content, calls = collect(
        ToolCallParser(), ['<tool_call>\n{"name": "f", "arguments": {"a": 2}}']
    )
    assert content == ""
    assert json.loads(calls[0]["arguments"]) == {"a": 2}


ONE_CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


@pytest.mark.parametrize("size", [1, 3, 10_000])
def test_a_call_cut_anywhere_leaks_no_markup(size: int) -> None:
    """Output cut off inside a call (``max_tokens``): no markup, nothing made up.

    ``<tool_call>`` is one token in Qwen3, so the cuts start after it."""
    for cut in range(len("<tool_call>"), len(ONE_CALL)):
        text = "Let me look.\n" + ONE_CALL[:cut]
        content, calls = collect(ToolCallParser(), pieces(text, size))
        assert content == "Let me look.", (cut, content)
        if cut <= ONE_CALL.index('{"city"'):
            assert not calls, (cut, calls)  # its name is not whole yet: dropped
            continue
        (call,) = calls.values()
        assert call["name"] == "get_weather"
        assert '{"city": "Paris"}'.startswith(call["arguments"]), (cut, call)
        assert call["arguments"] == ONE_CALL[ONE_CALL.index('{"city"') : cut][:17], (cut, call)


def test_a_cut_off_call_keeps_every_brace_its_arguments_wrote() -> None:
    content, calls = collect(
        ToolCallParser(), ['<tool_call>\n{"name": "f", "arguments": {"a": {"b": 1}']
    )
    assert (content, calls[0]["arguments"]) == ("", '{"a": {"b": 1}')


def test_detokenizer_multibyte_characters(tokenizer: PreTrainedTokenizerBase) -> None:
    text = "naïve 日本語 🎉 done"
    ids = tokenizer.encode(text, add_special_tokens=False)
    detok = IncrementalDetokenizer(tokenizer)
    deltas = [detok.push(i) for i in ids]
    assert "".join(deltas) + detok.flush() == text
    assert all("\ufffd" not in d for d in deltas)


def test_detokenizer_skips_eos_but_keeps_think_markers(tokenizer: PreTrainedTokenizerBase) -> None:
    ids = [*tokenizer.encode("<think>x</think>y", add_special_tokens=False), 151645]
    detok = IncrementalDetokenizer(tokenizer)
    assert "".join(detok.push(i) for i in ids) + detok.flush() == "<think>x</think>y"


def test_token_texts_bytes(tokenizer: PreTrainedTokenizerBase) -> None:
    texts = TokenTexts(tokenizer)
    (space_hello,) = tokenizer.encode(" hello", add_special_tokens=False)
    assert texts.get(space_hello) == (" hello", list(b" hello"))
    assert texts.get(151667) == ("<think>", list(b"<think>"))
