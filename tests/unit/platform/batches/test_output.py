"""Lines of the output and error files, and token counts from answers."""

from __future__ import annotations

from aiforge.platform.batches.output import (
    LineTokens,
    answered_line,
    not_run_line,
    output_line_id,
    tokens_of,
)


def test_an_answered_line_has_openais_shape() -> None:
    line = answered_line(custom_id="c", request_id="batch_x-1", status_code=200, body={"a": 1})
    assert line == {
        "id": output_line_id("batch_x-1"),
        "custom_id": "c",
        "response": {"status_code": 200, "request_id": "batch_x-1", "body": {"a": 1}},
        "error": None,
    }
    assert output_line_id("batch_x-1") == output_line_id("batch_x-1") != output_line_id("y")


def test_lines_that_never_ran_say_why() -> None:
    cancelled = not_run_line(custom_id="c", request_id="r", final_status="cancelled")
    expired = not_run_line(custom_id="c", request_id="r", final_status="expired")
    assert cancelled["response"] is None
    assert (cancelled["error"]["code"], expired["error"]["code"]) == (
        "batch_cancelled", "batch_expired",
    )  # fmt: skip


def test_tokens_of_chat_and_embedding_answers() -> None:
    chat = {"usage": {"prompt_tokens": 5, "completion_tokens": 3,
                      "prompt_tokens_details": {"cached_tokens": 2},
                      "completion_tokens_details": {"reasoning_tokens": 1}}}  # fmt: skip
    assert tokens_of(chat) == LineTokens(input=5, output=3, cached=2, reasoning=1)
    assert tokens_of({"usage": {"prompt_tokens": 4, "total_tokens": 4}}) == LineTokens(input=4)
    assert tokens_of({"error": {}}) == LineTokens()
    assert tokens_of([1]) == LineTokens()
    assert tokens_of({"usage": {"prompt_tokens": True}}) == LineTokens()
