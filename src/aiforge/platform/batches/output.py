"""The lines of a batch's output and error files (OpenAI's batch output format), and the
token counts a line's answer reports. Pure.

A line that was answered — successfully or not — is ``{"id", "custom_id", "response":
{"status_code", "request_id", "body"}, "error": null}``; answers with status 200 go to the
output file, the others to the error file. A line that never ran (its batch was cancelled
or expired first) goes to the error file with ``"response": null`` and ``"error": {"code":
"batch_cancelled" | "batch_expired", "message"}``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

NOT_RUN_CODES = {"cancelled": "batch_cancelled", "expired": "batch_expired"}


def output_line_id(request_id: str) -> str:
    return "batch_req_" + hashlib.sha256(request_id.encode()).hexdigest()[:32]


def answered_line(
    *, custom_id: str, request_id: str, status_code: int, body: Any
) -> dict[str, Any]:
    return {
        "id": output_line_id(request_id),
        "custom_id": custom_id,
        "response": {"status_code": status_code, "request_id": request_id, "body": body},
        "error": None,
    }


def not_run_line(*, custom_id: str, request_id: str, final_status: str) -> dict[str, Any]:
    code = NOT_RUN_CODES.get(final_status, "batch_" + final_status)
    verb = "expired" if final_status == "expired" else "was cancelled"
    return {
        "id": output_line_id(request_id),
        "custom_id": custom_id,
        "response": None,
        "error": {"code": code, "message": f"The batch {verb} before this request ran."},
    }


@dataclass(frozen=True, slots=True)
class LineTokens:
    input: int = 0
    output: int = 0
    cached: int = 0
    reasoning: int = 0


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def tokens_of(body: Any) -> LineTokens:
    """The ``usage`` an answer body reports (chat, completions or embeddings)."""
    usage = body.get("usage") if isinstance(body, dict) else None
    if not isinstance(usage, dict):
        return LineTokens()
    prompt_details = usage.get("prompt_tokens_details")
    completion_details = usage.get("completion_tokens_details")
    return LineTokens(
        input=_int(usage.get("prompt_tokens")),
        output=_int(usage.get("completion_tokens")),
        cached=_int(prompt_details.get("cached_tokens"))
        if isinstance(prompt_details, dict) else 0,
        reasoning=_int(completion_details.get("reasoning_tokens"))
        if isinstance(completion_details, dict) else 0,
    )  # fmt: skip
