"""What the fuzzer sends and what it demands of every answer, apart from any server.

The gateway's ``/openapi.json`` describes the ``/v1`` bodies (``openapi_body``) and the admin
API's; :func:`described_for_fuzzing` adapts a copy of it so generated requests get far:
the body's ``model`` may only be the served model (schema-valid requests reach the replica;
the negative cases still send other values), and :func:`bounded_costs` keeps a generated
request from asking for more generation than a fuzz run can afford. The judgements
(:func:`error_envelope_problem`, :func:`stream_problem`) are pure: status, headers, bytes in,
a reason out (``None`` when the answer is fine).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from typing import Any

V1_PREFIX = "/v1/"
ADMIN_PREFIX = "/admin/"
HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})

COST_CAPS: Mapping[str, int] = {
    "max_tokens": 8,
    "max_completion_tokens": 8,
    "max_output_tokens": 8,
    "n": 2,
    "best_of": 2,
    "top_logprobs": 3,
    "logprobs": 3,
}
"""Fields that multiply generation: a value above its cap but a plausible size (below
:data:`CAP_CEILING`) is lowered to the cap. Values past the ceiling are left alone: they
test validation (64-bit overflow, negative, absurd), and the server must refuse them fast."""
CAP_CEILING = 2**31

DEPLOYMENT_CAPS: Mapping[str, int] = {"replicas": 0, "min_replicas": 0}
"""Admin deployment bodies: a positive replica count would start real model processes on a
shared machine, so a plausible one becomes 0 (the spec is stored, nothing is launched);
negative and huge counts stay and must be refused."""


def described_for_fuzzing(spec: Mapping[str, Any], *, served_model: str) -> dict[str, Any]:
    """A copy of ``spec`` whose ``/v1`` JSON request bodies name only ``served_model`` in
    their ``model`` field, so schema-valid cases reach the replica.

    Read at run time from the live server: a ``/v1`` route added later is adapted and fuzzed
    without a change here.
    """
    described = copy.deepcopy(dict(spec))
    schemas: dict[str, Any] = described.get("components", {}).get("schemas", {})
    for path, item in described.get("paths", {}).items():
        if not path.startswith(V1_PREFIX):
            continue
        for operation in item.values():
            if not isinstance(operation, dict):
                continue
            content = operation.get("requestBody", {}).get("content", {})
            body = content.get("application/json", {}).get("schema", {})
            target = _resolved(body, schemas)
            model = target.get("properties", {}).get("model") if target else None
            if isinstance(model, dict):
                model.clear()
                model.update({"type": "string", "enum": [served_model]})
    return described


def only_operations(spec: dict[str, Any], pattern: str | None) -> dict[str, Any]:
    """``spec`` with only the operations whose ``METHOD /path`` ``pattern`` matches
    (searched, case-insensitively); all of them when ``pattern`` is ``None``."""
    if pattern is None:
        return spec
    wanted = re.compile(pattern, re.IGNORECASE)
    paths = {
        path: {
            method: operation
            for method, operation in item.items()
            if method.lower() not in HTTP_METHODS or wanted.search(f"{method.upper()} {path}")
        }
        for path, item in spec.get("paths", {}).items()
    }
    kept = {path: item for path, item in paths.items() if set(item) & HTTP_METHODS}
    return {**spec, "paths": kept}


def _resolved(schema: Mapping[str, Any], schemas: Mapping[str, Any]) -> dict[str, Any] | None:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
        target = schemas.get(ref.rsplit("/", 1)[-1])
        return target if isinstance(target, dict) else None
    return dict(schema) if schema else None


def bounded_costs(
    body: Any, caps: Mapping[str, int] = COST_CAPS, *, coercible: bool = False
) -> Any:
    """``body`` with each top-level field of ``caps`` lowered to its cap when it is a number
    between the cap and :data:`CAP_CEILING`; anything else unchanged. ``coercible`` counts
    what lax validation may turn into a number (``true``, ``"3"``) as that number too."""
    if not isinstance(body, dict):
        return body
    bounded = dict(body)
    for field, cap in caps.items():
        if field in bounded and cap < _magnitude(bounded[field], coercible) < CAP_CEILING:
            bounded[field] = cap
    return bounded


def _magnitude(value: Any, coercible: bool) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if coercible and isinstance(value, bool):
        return float(value)
    if coercible and isinstance(value, str):
        try:
            return float(value.strip().replace("_", ""))
        except ValueError:
            pass
    return float("nan")


def without_replicas(body: Any, *, fill_omitted: bool) -> Any:
    """An admin deployment body that launches nothing and attaches to nothing: replica
    counts bounded to 0 (:data:`DEPLOYMENT_CAPS`, coercible values too), ``endpoints``
    (replicas to attach to) emptied and, with ``fill_omitted`` (a create or a full apply,
    where an omitted count means 1), an omitted count set to 0."""
    if not isinstance(body, dict):
        return body
    bounded = bounded_costs(body, DEPLOYMENT_CAPS, coercible=True)
    if fill_omitted:
        bounded.setdefault("replicas", 0)
    if isinstance(bounded.get("endpoints"), list):
        bounded["endpoints"] = []
    return bounded


def shielded(path_parameters: Mapping[str, Any] | None, shield: Mapping[str, str]) -> Any:
    """``path_parameters`` with every value that names a shielded resource (the admin key,
    the served deployment, the ``/v1`` tenant) replaced by its stand-in from ``shield``."""
    if not path_parameters:
        return path_parameters
    return {
        name: shield.get(value, value) if isinstance(value, str) else value
        for name, value in path_parameters.items()
    }


def error_envelope_problem(status: int, content_type: str, body: bytes) -> str | None:
    """Why a 4xx answer is not OpenAI's error envelope
    ``{"error": {"message": str, "type": str, ...}}`` (``None`` if it is, or if ``status``
    is not a 4xx)."""
    if not 400 <= status < 500:
        return None
    if not content_type.startswith("application/json"):
        return f"{status} answered with content-type {content_type!r}, not application/json"
    try:
        document = json.loads(body)
    except ValueError:
        return f"{status} answered with a body that is not JSON: {body[:200]!r}"
    error = document.get("error") if isinstance(document, dict) else None
    if not isinstance(error, dict):
        return f"{status} answered without an 'error' object: {body[:200]!r}"
    for field in ("message", "type"):
        if not isinstance(error.get(field), str) or not error[field]:
            return f"{status} error envelope lacks a non-empty string '{field}': {body[:200]!r}"
    return None


RESPONSES_ENDINGS = frozenset({"response.completed", "response.incomplete"})
"""The events that end a Responses API stream that did not fail (it sends no ``[DONE]``)."""


def stream_problem(status: int, content_type: str, body: bytes) -> str | None:
    """Why a successful event stream is broken. A chat or completions stream ends with
    ``data: [DONE]``, a Responses stream with ``response.completed`` or
    ``response.incomplete``; neither carries an error event (an error once the stream has
    begun is a server failure inside a 200)."""
    if status != 200 or not content_type.startswith("text/event-stream"):
        return None
    payloads = [
        line.removeprefix(b"data:").strip()
        for line in body.splitlines()
        if line.startswith(b"data:")
    ]
    if not payloads:
        return "stream carries no data events"
    done = payloads[-1] == b"[DONE]"
    events = []
    for payload in payloads[:-1] if done else payloads:
        try:
            events.append(json.loads(payload))
        except ValueError:
            return f"stream event is not JSON: {payload[:200]!r}"
    for event in events:
        if isinstance(event, dict) and ("error" in event or event.get("type") == "error"):
            return f"stream carries an error event: {json.dumps(event)[:300]}"
    kinds = [event.get("type") if isinstance(event, dict) else None for event in events]
    if any(isinstance(kind, str) and kind.startswith("response.") for kind in kinds):
        if kinds[-1] not in RESPONSES_ENDINGS:
            return f"Responses stream ends with {kinds[-1]!r}, not completed or incomplete"
        return None
    if not done:
        return f"stream does not end with data: [DONE] (last event: {payloads[-1][:200]!r})"
    return None
