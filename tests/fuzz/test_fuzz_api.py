"""Fuzz the whole public surface: every operation of the live ``/openapi.json`` (the ``/v1``
API with its bodies described, the admin API, health and metrics), positive and negative
cases, deterministic and bounded (:mod:`fuzz_runner`).

Every answer must be below 500, every 4xx OpenAI's JSON error envelope, every successful
event stream must end as its API says (``[DONE]``, or a Responses stream's completed or
incomplete event) and carry no error; afterwards the replica must still be healthy and
answer a real chat completion.
"""

from __future__ import annotations

import fuzz_runner
import httpx
import openai
import pytest
from fuzz_target import FuzzTarget, fuzz_target

from aiforge.models.demo import DEMO_NAME

pytestmark = [pytest.mark.fuzz, pytest.mark.slow]
__all__ = ["fuzz_target"]  # the session fixture, used by the tests below


def test_no_request_gets_a_5xx_or_a_bare_error(fuzz_target: FuzzTarget) -> None:
    schema = fuzz_runner.load_schema(
        fuzz_target.server.url,
        served_model=DEMO_NAME,
        headers_by_prefix=fuzz_target.headers_by_prefix(),
        real_path_parameters=fuzz_target.real_path_parameters,
        shield=fuzz_target.shield,
    )
    report = fuzz_runner.run(schema)
    print(report.describe())
    assert not report.failures, report.describe()
    assert not report.errors, report.describe()
    if fuzz_runner.OPERATIONS is None:  # not narrowed by hand to some operations
        paths = {label.split(" ", 1)[1] for label in report.operations}
        assert {"/v1/chat/completions", "/admin/v1/projects"} <= paths, report.describe()
    # Schema-valid bodies reached the replica and were answered, not only refused.
    for operation in {"POST /v1/chat/completions", "POST /v1/completions"} & report.operations:
        assert report.successes(operation) > 0, report.describe()
    _assert_healthy(fuzz_target)


def _assert_healthy(fuzz_target: FuzzTarget) -> None:
    """Nothing the run sent took the service down: ``/health`` answers 200, the demo
    deployment has a ready replica, and a real chat completion succeeds."""
    server = fuzz_target.server
    response = httpx.get(server.url_for("health"), timeout=10)
    assert response.status_code == 200, response.text
    demo = [d for d in response.json()["deployments"] if d["name"] == DEMO_NAME]
    assert demo, response.json()
    assert demo[0]["ready_replicas"] >= 1, demo[0]
    with openai.OpenAI(
        base_url=server.base_url, api_key=fuzz_target.project_key, max_retries=0, timeout=60.0
    ) as client:
        completion = client.chat.completions.create(
            model=DEMO_NAME, messages=[{"role": "user", "content": "still there?"}], max_tokens=4
        )
    assert completion.choices[0].message.content is not None
    assert completion.usage is not None
    assert completion.usage.completion_tokens > 0
