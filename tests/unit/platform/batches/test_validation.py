"""Checking a batch input file: each problem named with its line, like OpenAI's
``errors.data[]``; blank lines are not requests; the limits hold."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from aiforge.platform.batches.lines import InputLine, read_requests
from aiforge.platform.batches.validation import MAX_REPORTED_ERRORS, check_input

CHAT = "/v1/chat/completions"


def _line(custom_id: str = "a", **changes: Any) -> dict[str, Any]:
    line = {"custom_id": custom_id, "method": "POST", "url": CHAT,
            "body": {"model": "m", "messages": []}}  # fmt: skip
    return {**line, **changes}


def _lines(*raw: bytes | None) -> list[InputLine]:
    return [InputLine(index=i, number=i + 1, raw=r) for i, r in enumerate(raw)]


def _check(*lines: bytes | None, max_lines: int = 10, allowed: str = "m") -> Any:
    def refusal(model: str) -> str | None:
        return None if model == allowed else f"no {model}"

    return check_input(_lines(*lines), endpoint=CHAT, max_lines=max_lines, model_refusal=refusal)


def test_a_valid_file() -> None:
    check = _check(orjson.dumps(_line("a")), orjson.dumps(_line("b")))
    assert (check.ok, check.total, check.model) == (True, 2, "m")


def test_each_problem_names_its_line_and_code() -> None:
    check = _check(
        orjson.dumps(_line("a")),
        b"{not json",
        b"[1]",
        orjson.dumps(_line("a")),
        orjson.dumps(_line("c", method="GET")),
        orjson.dumps(_line("d", url="/v1/embeddings")),
        orjson.dumps(_line("e", body="text")),
        orjson.dumps(_line("f", body={"messages": []})),
        orjson.dumps(_line("g", body={"model": "other"})),
        orjson.dumps(_line("h", body={"model": "m", "stream": True})),
        orjson.dumps(_line("")),
        None,
        max_lines=100,
    )
    found = [(e.line, e.code) for e in check.errors]
    assert found == [
        (2, "invalid_json_line"), (3, "invalid_json_line"), (4, "duplicate_custom_id"),
        (5, "invalid_method"), (6, "invalid_url"), (7, "invalid_request"),
        (8, "missing_required_parameter"), (9, "mismatched_model"), (10, "invalid_value"),
        (11, "missing_required_parameter"), (12, "line_too_long"),
    ]  # fmt: skip
    assert not check.ok


def test_a_model_the_project_may_not_use_fails_the_file() -> None:
    check = _check(orjson.dumps(_line("a")), allowed="x")
    assert [(e.code, e.line, e.param) for e in check.errors] == [
        ("model_not_found", 1, "body.model")
    ]


def test_empty_and_oversized_files() -> None:
    assert [e.code for e in _check().errors] == ["empty_file"]
    many = [orjson.dumps(_line(str(i))) for i in range(4)]
    assert [e.code for e in _check(*many, max_lines=3).errors] == ["too_many_requests_in_file"]


def test_reported_errors_are_bounded_but_counted() -> None:
    check = _check(*([b"x"] * (MAX_REPORTED_ERRORS + 5)), max_lines=10_000)
    assert len(check.errors) == MAX_REPORTED_ERRORS
    assert check.error_count == MAX_REPORTED_ERRORS + 5


def test_requests_are_read_without_blank_lines_and_overlong_ones_are_not_held(
    tmp_path: Path,
) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"a":1}\n\n   \n' + b"x" * 100 + b'\n{"b":2}\r\n{"c":3}')
    lines = list(read_requests(path, max_line_bytes=50))
    assert [(r.index, r.number, r.raw) for r in lines] == [
        (0, 1, b'{"a":1}'), (1, 4, None), (2, 5, b'{"b":2}'), (3, 6, b'{"c":3}'),
    ]  # fmt: skip
