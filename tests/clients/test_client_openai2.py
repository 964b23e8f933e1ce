"""Clients whose releases still require ``openai<3``: instructor and LlamaIndex.

They run in ``tests/clients/.venv-openai2`` (``tests/clients/install``), one subprocess per
client and group of checks (``openai2/*_checks.py``); each check is its own test here.
"""

from __future__ import annotations

from typing import Any

import pytest
from clients_support import (
    INSTALL_HINT,
    OPENAI2_PYTHON,
    ClientTarget,
    assert_passed,
    run_checks,
)

pytestmark = pytest.mark.clients

INSTRUCTOR_CHECKS = ("json_schema", "tools", "streamed_partial")
LLAMAINDEX_CHAT_CHECKS = ("chat", "stream", "forced_tool", "structured")


def script(name: str) -> list[str]:
    if not OPENAI2_PYTHON.exists():
        pytest.fail(f"{OPENAI2_PYTHON} is missing: {INSTALL_HINT}")
    return [str(OPENAI2_PYTHON), f"openai2/{name}_checks.py"]


@pytest.fixture(scope="module")
def instructor_results(target: ClientTarget) -> dict[str, Any]:
    return run_checks(script("instructor"), target, INSTRUCTOR_CHECKS)


@pytest.fixture(scope="module")
def llamaindex_results(target: ClientTarget) -> dict[str, Any]:
    return run_checks(script("llamaindex"), target, LLAMAINDEX_CHAT_CHECKS)


@pytest.mark.parametrize("check", INSTRUCTOR_CHECKS)
def test_instructor(instructor_results: dict[str, Any], check: str) -> None:
    assert_passed(instructor_results, check)


@pytest.mark.parametrize("check", LLAMAINDEX_CHAT_CHECKS)
def test_llamaindex(llamaindex_results: dict[str, Any], check: str) -> None:
    assert_passed(llamaindex_results, check)


def test_llamaindex_embeddings(embedding_target: ClientTarget) -> None:
    assert_passed(run_checks(script("llamaindex"), embedding_target, ["embeddings"]), "embeddings")
