"""One schemathesis run over a live aiforge server, summarized as a :class:`FuzzReport`.

The run is schemathesis' own engine (what ``schemathesis run`` drives: the examples,
coverage and fuzzing phases, positive and negative cases) over the server's live
``/openapi.json``, adapted by :func:`fuzz_support.described_for_fuzzing`. It is
deterministic (fixed seed, derandomized Hypothesis, no example database) and bounded
(:data:`MAX_EXAMPLES` per operation in the fuzzing phase; :data:`GUARD_S` in all). The
checks are ``not_a_server_error`` and the two below (judged by :mod:`fuzz_support`); every
other built-in check is off (the responses are not described in the schema).

The engine is used rather than schemathesis' pytest plugin, whose ``from_fixture`` loader
does not run on the pytest installed here (it sets ``Function._nodeid``, gone in pytest 9);
the version is pinned in ``pyproject.toml`` for that reason.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

import httpx
import hypothesis
import schemathesis
from fuzz_support import (
    ADMIN_PREFIX,
    COST_CAPS,
    V1_PREFIX,
    bounded_costs,
    described_for_fuzzing,
    error_envelope_problem,
    only_operations,
    shielded,
    stream_problem,
    without_replicas,
)
from hypothesis import strategies as st
from schemathesis import BaseSchema, Case, CheckContext, HookContext, Response
from schemathesis.engine import Status, StopReason, events, from_schema
from schemathesis.engine.core import EventStream

SEED = int(os.environ.get("AIFORGE_FUZZ_SEED", "20240607"))
MAX_EXAMPLES = int(os.environ.get("AIFORGE_FUZZ_MAX_EXAMPLES", "12"))
"""Hypothesis examples per operation in the fuzzing phase (the coverage phase adds its own
deterministic edge cases); sized so the whole run takes under three minutes on two cores.
``AIFORGE_FUZZ_SEED`` and ``AIFORGE_FUZZ_MAX_EXAMPLES`` change them for a longer or
different run by hand."""
MAX_EXAMPLES_BY_PREFIX = {V1_PREFIX: 3 * MAX_EXAMPLES}
"""The ``/v1`` operations get more: their schema-valid cases are the ones that reach the
replica, and semantic rules the schema cannot state (a tool message needs its call id, a
prompt must not be empty) refuse many of them."""
GUARD_S = float(os.environ.get("AIFORGE_FUZZ_GUARD_S", "600"))
"""A guard, not the bound: a run still going after this long is stopped and fails (its
remaining operations untested). Not schemathesis' ``max-time``, which keeps cycling the
phases until the time is spent."""
REQUEST_TIMEOUT_S = 60.0
OPERATIONS = os.environ.get("AIFORGE_FUZZ_OPERATIONS")
"""A regular expression: only the operations whose ``METHOD /path`` it matches are fuzzed
(to rerun one that failed); unset, all of them."""
DEPLOYMENTS_PATH = f"{ADMIN_PREFIX}v1/deployments"
MAX_STREAM_EVENTS = 100_000
"""Read every event of a stream (schemathesis stops at 20 by default), so a stream's end is
checked."""


@schemathesis.check
def error_envelope(ctx: CheckContext, response: Response, case: Case[Any]) -> bool | None:
    """Every 4xx is OpenAI's JSON error envelope ``{"error": {"message", "type", ...}}``."""
    problem = error_envelope_problem(
        response.status_code, _content_type(response), response.content
    )
    assert problem is None, problem
    return None


@schemathesis.check
def complete_stream(ctx: CheckContext, response: Response, case: Case[Any]) -> bool | None:
    """A 200 event stream ends as its API says and carries no error event."""
    problem = stream_problem(response.status_code, _content_type(response), response.content)
    assert problem is None, problem
    return None


def _content_type(response: Response) -> str:
    values = response.headers.get("content-type") or [""]
    return values[0]


@dataclass(frozen=True)
class FuzzFailure:
    operation: str
    check: str
    message: str
    reproduce: str
    """A ``curl`` command that sends the failing request again."""


@dataclass
class FuzzReport:
    operations: set[str] = field(default_factory=set)
    cases: int = 0
    failures: list[FuzzFailure] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    """Errors of the run itself (a request that got no answer, a schema it could not read)."""
    stop_reason: str = ""
    seconds: float = 0.0
    seconds_by_operation: dict[str, float] = field(default_factory=dict)
    statuses: dict[str, Counter[int]] = field(default_factory=dict)
    """The answers' status codes, by operation."""

    def successes(self, operation: str) -> int:
        return sum(
            n for status, n in self.statuses.get(operation, Counter()).items() if status < 300
        )

    def describe(self) -> str:
        lines = [
            f"{len(self.operations)} operations, {self.cases} cases, {self.seconds:.0f}s, "
            f"stopped: {self.stop_reason}"
        ]
        for failure in self.failures:
            lines += [
                f"- {failure.operation} [{failure.check}]: {failure.message}",
                f"  reproduce: {failure.reproduce}",
            ]
        lines += [f"- error: {error}" for error in self.errors]
        for label in sorted(self.statuses):
            lines.append(f"{label}: {dict(sorted(self.statuses[label].items()))}")
        slowest = sorted(self.seconds_by_operation.items(), key=lambda item: -item[1])[:8]
        lines.append("slowest: " + ", ".join(f"{label} {s:.0f}s" for label, s in slowest))
        return "\n".join(lines)


def config(
    base_url: str, headers_by_prefix: Mapping[str, Mapping[str, str]]
) -> schemathesis.Config:
    """The run's configuration: deterministic, bounded, the three checks, and the
    credentials of each path prefix (``/admin/`` and ``/v1/``)."""
    return schemathesis.Config.from_dict(
        {
            "base-url": base_url,
            "seed": SEED,
            "suppress-health-check": ["all"],
            "request-timeout": REQUEST_TIMEOUT_S,
            "max-stream-events": MAX_STREAM_EVENTS,
            "workers": 1,
            # The `curl` of a failure must send the same request: schemathesis would mask
            # `max_tokens` and the key (a throwaway test key on a throwaway server).
            "output": {"sanitization": {"enabled": False}},
            "generation": {
                "mode": "all",
                "max-examples": MAX_EXAMPLES,
                "deterministic": True,
                "database": "none",
            },
            "phases": {
                "examples": {"enabled": True},
                "coverage": {"enabled": True},
                "fuzzing": {"enabled": True},
                "stateful": {"enabled": False},
            },
            "checks": {
                "enabled": False,
                "not_a_server_error": {"enabled": True},
                "error_envelope": {"enabled": True},
                "complete_stream": {"enabled": True},
            },
            "operations": [
                {
                    "include-path-regex": f"^{prefix}",
                    "headers": dict(headers),
                    "generation": {
                        "max-examples": MAX_EXAMPLES_BY_PREFIX.get(prefix, MAX_EXAMPLES)
                    },
                }
                for prefix, headers in headers_by_prefix.items()
            ],
        }
    )


def load_schema(
    server_url: str,
    *,
    served_model: str,
    headers_by_prefix: Mapping[str, Mapping[str, str]],
    real_path_parameters: Mapping[str, str],
    shield: Mapping[str, str],
) -> BaseSchema:
    """The live schema, adapted, with hooks that bound each case's cost, keep admin cases
    off the ``shield``ed resources, and send half the generated path parameters as
    ``real_path_parameters`` (ids of resources that exist)."""
    raw = httpx.get(f"{server_url}/openapi.json", timeout=30).json()
    schema = schemathesis.openapi.from_dict(
        only_operations(described_for_fuzzing(raw, served_model=served_model), OPERATIONS),
        config=config(server_url, headers_by_prefix),
    )
    real = dict(real_path_parameters)

    @schema.hook
    def map_case(context: HookContext, case: Case[Any]) -> Case[Any]:
        # map_case, not map_body: the coverage phase applies only case hooks.
        if case.path.startswith(V1_PREFIX):
            case.body = bounded_costs(case.body, COST_CAPS)
        elif case.path.startswith(ADMIN_PREFIX):
            case.path_parameters = shielded(case.path_parameters, shield)
            if case.path.startswith(DEPLOYMENTS_PATH):
                creates = case.method.upper() in {"POST", "PUT"} and "/scale" not in case.path
                case.body = without_replicas(case.body, fill_omitted=creates)
        return case

    @schema.hook
    def flatmap_path_parameters(
        context: HookContext, path_parameters: dict[str, Any] | None
    ) -> st.SearchStrategy[dict[str, Any] | None]:
        if not path_parameters:
            return st.just(path_parameters)
        existing = {name: real.get(name, value) for name, value in path_parameters.items()}
        return st.sampled_from([path_parameters, existing])

    return schema


def run(schema: BaseSchema) -> FuzzReport:
    """Run every phase over every operation of ``schema``; collect what failed.

    Hypothesis' targeting is off for the run (``hypothesis.target`` a no-op): schemathesis
    targets each operation's success rate, and against a live server the hill-climbing
    that follows spent minutes of CPU on one operation for a handful of requests; the
    budget goes to breadth instead."""
    report = FuzzReport()
    with mock.patch.object(hypothesis, "target", _untargeted):
        _collect(report, _guarded(from_schema(schema).execute(), GUARD_S))
    return report


def _guarded(stream: EventStream, guard_s: float) -> Iterator[events.EngineEvent]:
    """``stream``'s events; past ``guard_s`` it is told to stop (it then finishes)."""
    deadline = time.monotonic() + guard_s
    for event in stream:
        if time.monotonic() > deadline:
            stream.stop()
        yield event


def _untargeted(observation: float, *, label: str = "") -> float:
    return observation


def _collect(report: FuzzReport, stream: Iterable[events.EngineEvent]) -> None:
    for event in stream:
        if isinstance(event, events.ScenarioFinished):
            _record_scenario(report, event)
        elif isinstance(event, events.NonFatalError):
            report.errors.append(f"{event.label}: {event.info.format()}")
        elif isinstance(event, events.FatalError):
            report.errors.append(f"fatal: {event.exception!r}")
        elif isinstance(event, events.EngineFinished):
            report.stop_reason = str(event.stop_reason)
            report.seconds = event.running_time
            if event.stop_reason is not StopReason.COMPLETED:
                report.errors.append(f"the run stopped early: {event.stop_reason}")


def _record_scenario(report: FuzzReport, event: events.ScenarioFinished) -> None:
    if event.status is Status.SKIP:
        return
    recorder = event.recorder
    report.operations.add(recorder.label)
    spent = report.seconds_by_operation.get(recorder.label, 0.0) + event.elapsed_time
    report.seconds_by_operation[recorder.label] = spent
    report.cases += len(recorder.cases)
    statuses = report.statuses.setdefault(recorder.label, Counter())
    for case_id in recorder.cases:
        response = recorder.find_response(case_id=case_id)
        if response is not None:
            statuses[response.status_code] += 1
    for case_id, checks in recorder.checks.items():
        for check in checks:
            info = check.failure_info
            if check.status is Status.FAILURE and info is not None:
                response = recorder.find_response(case_id=case_id)
                answer = (
                    f"{response.status_code} {response.content[:300]!r}"
                    if response
                    else "no answer"
                )
                failure = FuzzFailure(
                    operation=recorder.label,
                    check=check.name,
                    message=f"{info.failure.title} {info.failure.message}; got {answer}"[:800],
                    reproduce=info.code_sample,
                )
                if failure not in report.failures:
                    report.failures.append(failure)
