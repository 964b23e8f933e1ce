"""The npm clients, run by ``node``: the official ``openai`` package and the Vercel AI SDK
(``ai`` + ``@ai-sdk/openai-compatible`` on chat completions, ``@ai-sdk/openai`` on the
Responses API). ``node/checks.mjs`` runs the checks; each is its own test here."""

from __future__ import annotations

import shutil
from typing import Any

import pytest
from clients_support import INSTALL_HINT, NODE_DIR, ClientTarget, assert_passed, run_checks

pytestmark = pytest.mark.clients

CHAT_CHECKS = (
    "openai_chat", "openai_stream", "openai_forced_tool", "openai_structured", "openai_responses",
    "ai_generate_text", "ai_stream_text", "ai_forced_tool", "ai_generate_object",
    "ai_responses_model",
)  # fmt: skip
EMBEDDING_CHECKS = ("openai_embeddings", "ai_embed_many")


def node_script() -> list[str]:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed (the npm clients need Node.js >= 20)")
    if not (NODE_DIR / "node_modules").is_dir():
        pytest.fail(f"{NODE_DIR / 'node_modules'} is missing: {INSTALL_HINT}")
    return [node, "node/checks.mjs"]


@pytest.fixture(scope="module")
def chat_results(target: ClientTarget) -> dict[str, Any]:
    return run_checks(node_script(), target, CHAT_CHECKS)


@pytest.fixture(scope="module")
def embedding_results(embedding_target: ClientTarget) -> dict[str, Any]:
    return run_checks(node_script(), embedding_target, EMBEDDING_CHECKS)


@pytest.mark.parametrize("check", CHAT_CHECKS)
def test_node_chat(chat_results: dict[str, Any], check: str) -> None:
    assert_passed(chat_results, check)


@pytest.mark.parametrize("check", EMBEDDING_CHECKS)
def test_node_embeddings(embedding_results: dict[str, Any], check: str) -> None:
    assert_passed(embedding_results, check)
