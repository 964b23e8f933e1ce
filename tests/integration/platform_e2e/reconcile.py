"""Reconcile the usage ledger with what the clients saw (pure: no I/O).

Each ledger row is mapped to its client try by ``request_id`` (the ``x-request-id`` the
gateway answered with). A row whose id no client saw belongs to a try cut before response
headers (the gateway was killed): it maps to the id-less try of its key whose in-flight
interval holds the row's ``started_at`` (see :mod:`mixed_load`). Then:

* an answered try has exactly one row; a try that never connected has none; a try cut
  after its headers (a stream in flight at the SIGKILL) has exactly one — the journal's
  opened entry became a ``gateway_crashed`` record at the restart; a try cut before its
  headers has at most one (it may not have reached a replica yet);
* the row's tokens equal what the client received:

  - non-streamed answers: the body's ``usage``; errors: zero;
  - streams with ``include_usage``: the usage chunk the client got;
  - streams without it: the gateway asked the replica for usage and stripped it, so the
    client saw none; it counts its completion tokens from ``logprobs`` (one entry per
    token) and knows the prompt's size from a non-streamed call with the same messages;
  - streams the client hung up on: the gateway meters the last usage it forwarded (usage
    on every chunk, ``continuous_usage_stats``): the exact prompt, and at least the
    content chunks the client read, at most ``max_tokens``.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from mixed_load import CANCELLED_MAX_TOKENS, Attempt
from platform_e2e_support import LedgerRow

CLOCK_TOLERANCE_S = 2e-6
"""The database keeps microseconds."""


@dataclass
class Reconciliation:
    problems: list[str] = field(default_factory=list)
    rows_by_attempt: dict[int, list[LedgerRow]] = field(default_factory=dict)
    client_tokens: list[int] = field(default_factory=lambda: [0, 0])
    """Prompt and completion tokens the clients received (exact categories)."""
    ledger_tokens: list[int] = field(default_factory=lambda: [0, 0])
    """The same requests' tokens in the ledger."""
    hung_up: int = 0
    hung_up_exact: int = 0
    """Hung-up streams whose completion count equals the content chunks the client read."""
    crashed: int = 0
    """Rows of tries the gateway's SIGKILL cut (``gateway_crashed``)."""


def reconcile(
    attempts: Sequence[Attempt], rows: Sequence[LedgerRow], prompt_tokens: Mapping[str, int]
) -> Reconciliation:
    result = Reconciliation()
    _map_rows(attempts, rows, result)
    for number, attempt in enumerate(attempts):
        found = result.rows_by_attempt.get(number, [])
        label = f"request {attempt.request.index} ({attempt.request.kind}, {attempt.outcome})"
        if attempt.outcome == "answered" and len(found) != 1:
            result.problems.append(f"{label}: {len(found)} ledger rows, expected 1")
        elif attempt.outcome == "unreached" and found:
            result.problems.append(f"{label}: never reached the gateway but has a row")
        elif attempt.outcome == "cut" and attempt.request_id is not None and len(found) != 1:
            result.problems.append(f"{label}: {len(found)} rows for a try cut mid-answer")
        elif attempt.outcome == "cut" and len(found) > 1:
            result.problems.append(f"{label}: {len(found)} rows for one try")
        if attempt.outcome == "cut" and found:
            result.crashed += 1
            _check_crashed(attempt, found[0], result, label)
        if attempt.outcome == "answered" and len(found) == 1:
            _check_tokens(attempt, found[0], prompt_tokens, result, label)
    return result


def _map_rows(attempts: Sequence[Attempt], rows: Sequence[LedgerRow], out: Reconciliation) -> None:
    by_id = {a.request_id: n for n, a in enumerate(attempts) if a.request_id is not None}
    by_key: dict[str, list[int]] = defaultdict(list)
    for position, attempt in enumerate(attempts):
        if attempt.request_id is None:
            by_key[attempt.key_id].append(position)
    for numbers in by_key.values():
        numbers.sort(key=lambda n: attempts[n].sent_at)
    starts = {key: [attempts[n].sent_at for n in numbers] for key, numbers in by_key.items()}
    for row in rows:
        number = by_id.get(row.request_id)
        if number is None:
            number = _by_time(row, attempts, by_key.get(row.key_id, []), starts)
        if number is None:
            out.problems.append(f"row {row.request_id} ({row.kind}) matches no client request")
            continue
        out.rows_by_attempt.setdefault(number, []).append(row)


def _by_time(
    row: LedgerRow, attempts: Sequence[Attempt], numbers: list[int], starts: dict[str, list[float]]
) -> int | None:
    """The id-less try of the row's key in flight at the row's ``started_at``."""
    found = bisect.bisect_right(starts.get(row.key_id, []), row.started_at + CLOCK_TOLERANCE_S)
    number = numbers[found - 1] if found else None
    if number is None or row.started_at > attempts[number].done_at + CLOCK_TOLERANCE_S:
        return None
    return number


def _check_crashed(attempt: Attempt, row: LedgerRow, out: Reconciliation, label: str) -> None:
    """A try cut by the SIGKILL: the replay's record (or the real one, had it finished)."""
    if row.error_type != "gateway_crashed":
        if attempt.request_id is not None:  # its answer had begun: the gateway never ended it
            out.problems.append(f"{label}: cut mid-answer but recorded as {row}")
        return
    expected = (502, attempt.request.estimated_prompt_tokens, 0)
    if (row.status_code, row.prompt_tokens, row.completion_tokens) != expected:
        out.problems.append(f"{label}: crash record {row}, expected (status, prompt, completion) "
                            f"{expected}")  # fmt: skip


def _check_tokens(
    attempt: Attempt,
    row: LedgerRow,
    prompt_tokens: Mapping[str, int],
    out: Reconciliation,
    label: str,
) -> None:
    if row.status_code != attempt.status:
        out.problems.append(
            f"{label}: ledger status {row.status_code}, client got {attempt.status}"
        )
    if attempt.request.kind == "chat_cancelled" and attempt.hung_up:
        _check_hung_up(attempt, row, prompt_tokens, out, label)
        return
    expected = client_usage(attempt, prompt_tokens)
    if expected is None:
        out.problems.append(f"{label}: the client received no usage to compare")
        return
    got = (row.prompt_tokens, row.completion_tokens)
    if got != expected:
        out.problems.append(f"{label}: ledger tokens {got}, client received {expected}")
    for i in (0, 1):
        out.client_tokens[i] += expected[i]
        out.ledger_tokens[i] += got[i]


def client_usage(attempt: Attempt, prompt_tokens: Mapping[str, int]) -> tuple[int, int] | None:
    """(prompt, completion) tokens as the client can tell them, or None if it cannot."""
    if attempt.status != 200:
        return 0, 0
    if attempt.tally is None:  # not streamed
        usage = (attempt.body or {}).get("usage")
        return (
            None if usage is None else (usage["prompt_tokens"], usage.get("completion_tokens", 0))
        )
    if attempt.tally.usage is not None:
        return attempt.tally.usage["prompt_tokens"], attempt.tally.usage["completion_tokens"]
    if attempt.request.kind == "chat_stream_bare":
        return prompt_tokens[attempt.request.prompt], attempt.tally.logprob_tokens
    return None


def _check_hung_up(
    attempt: Attempt,
    row: LedgerRow,
    prompt_tokens: Mapping[str, int],
    out: Reconciliation,
    label: str,
) -> None:
    out.hung_up += 1
    assert attempt.tally is not None
    read = attempt.tally.content_chunks
    if not row.cancelled:  # the stream ended before the gateway saw the hang-up
        expected_prompt = prompt_tokens[attempt.request.prompt]
        if row.prompt_tokens != expected_prompt or row.completion_tokens > CANCELLED_MAX_TOKENS:
            out.problems.append(f"{label}: finished stream metered {row}")
        return
    expected_prompt = prompt_tokens[attempt.request.prompt]
    if row.prompt_tokens != expected_prompt:
        out.problems.append(
            f"{label}: cancelled stream's prompt {row.prompt_tokens}, the replica counts "
            f"{expected_prompt}"
        )
    if not read <= row.completion_tokens <= CANCELLED_MAX_TOKENS:
        out.problems.append(
            f"{label}: cancelled stream metered {row.completion_tokens} completion tokens, "
            f"client read {read} content chunks (max {CANCELLED_MAX_TOKENS})"
        )
    out.hung_up_exact += row.completion_tokens == read
