"""Checking a batch's input file before any line runs (pure: lines in, verdict out).

Each request line must be a JSON object with a ``custom_id`` (a non-empty string, unique
in the file), ``method`` ``POST``, the batch's endpoint as ``url``, and a ``body`` object
naming a ``model`` — one model for the whole file, one the project may use — that does not
ask to stream. The file must hold 1 to ``max_lines`` requests. Every problem is reported
with its line number (OpenAI's ``errors.data[]``), up to :data:`MAX_REPORTED_ERRORS`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from aiforge.platform.batches.lines import InputLine
from aiforge.types import RequestKind

ENDPOINT_KINDS: dict[str, RequestKind] = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completion",
    "/v1/embeddings": "embedding",
}
"""The endpoints a batch may target, and the kind of request each line then is."""
MAX_REPORTED_ERRORS = 100
MAX_CUSTOM_ID_CHARS = 512


@dataclass(frozen=True, slots=True)
class LineError:
    """One problem of the input file (OpenAI's ``BatchError``)."""

    code: str
    message: str
    line: int | None = None
    param: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "param": self.param,
                "line": self.line}  # fmt: skip


@dataclass(frozen=True, slots=True)
class BatchRequest:
    """One valid request line."""

    custom_id: str
    body: dict[str, Any]

    @property
    def model(self) -> str:
        return str(self.body["model"])


def parse_request(raw: bytes | None, *, endpoint: str, number: int) -> BatchRequest | LineError:
    """The request on one line, or what is wrong with it."""
    if raw is None:
        return LineError("line_too_long", "The line is longer than a request may be.", number)
    try:
        line = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return LineError("invalid_json_line", "The line is not valid JSON.", number)
    if not isinstance(line, dict):
        return LineError("invalid_json_line", "The line is not a JSON object.", number)
    custom_id = line.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return LineError(
            "missing_required_parameter", "custom_id must be a non-empty string.", number,
            "custom_id",
        )  # fmt: skip
    if len(custom_id) > MAX_CUSTOM_ID_CHARS:
        return LineError("invalid_value", "custom_id is too long.", number, "custom_id")
    if line.get("method") != "POST":
        return LineError("invalid_method", "method must be POST.", number, "method")
    if line.get("url") != endpoint:
        return LineError(
            "invalid_url", f"url must be the batch's endpoint, {endpoint}.", number, "url"
        )
    body = line.get("body")
    if not isinstance(body, dict):
        return LineError("invalid_request", "body must be a JSON object.", number, "body")
    if not isinstance(body.get("model"), str) or not body["model"]:
        return LineError(
            "missing_required_parameter", "body.model must name a model.", number, "body.model"
        )
    if body.get("stream"):
        return LineError("invalid_value", "Batch requests cannot stream.", number, "body.stream")
    return BatchRequest(custom_id=custom_id, body=body)


@dataclass
class InputCheck:
    """The verdict on a whole input file: its request count and model, or its errors."""

    total: int = 0
    model: str | None = None
    errors: list[LineError] = field(default_factory=list)
    error_count: int = 0

    def add_error(self, error: LineError) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append(error)

    @property
    def ok(self) -> bool:
        return self.error_count == 0


def check_input(
    lines: Iterable[InputLine],
    *,
    endpoint: str,
    max_lines: int,
    model_refusal: Callable[[str], str | None],
) -> InputCheck:
    """Check every line; ``model_refusal(model)`` says why the project may not use a model
    (None: it may)."""
    check = InputCheck()
    seen: set[str] = set()
    for line in lines:
        check.total += 1
        if check.total > max_lines:
            check.add_error(LineError(
                "too_many_requests_in_file",
                f"The file holds more than {max_lines} requests.", line.number,
            ))  # fmt: skip
            break
        parsed = parse_request(line.raw, endpoint=endpoint, number=line.number)
        if isinstance(parsed, LineError):
            check.add_error(parsed)
            continue
        if parsed.custom_id in seen:
            check.add_error(LineError(
                "duplicate_custom_id", f"custom_id {parsed.custom_id!r} is used twice.",
                line.number, "custom_id",
            ))  # fmt: skip
        seen.add(parsed.custom_id)
        _check_model(check, parsed.model, line.number, model_refusal)
    if check.total == 0:
        check.add_error(LineError("empty_file", "The input file holds no requests."))
    return check


def _check_model(
    check: InputCheck, model: str, number: int, model_refusal: Callable[[str], str | None]
) -> None:
    if check.model is None:
        check.model = model
        refusal = model_refusal(model)
        if refusal is not None:
            check.add_error(LineError("model_not_found", refusal, number, "body.model"))
    elif model != check.model:
        check.add_error(LineError(
            "mismatched_model",
            f"Every request of a batch must use one model; this line uses {model!r}, "
            f"the first used {check.model!r}.", number, "body.model",
        ))  # fmt: skip
