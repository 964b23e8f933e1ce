"""Engines in tests: use one when it is installed, skip without it — unless the run demands it
(``AIFORGE_REQUIRE_ENGINES`` names it, as in CI), where a missing engine is a failure."""

from __future__ import annotations

import os

import pytest

from aiforge.config import Settings
from aiforge.engines.vllm import VllmEngine


def vllm_engine_or_skip() -> VllmEngine:
    """The vLLM engine, when its venv is installed; else skip (or fail when required)."""
    engine = VllmEngine(Settings())
    availability = engine.availability()
    if availability.ok:
        return engine
    message = f"vLLM engine venv missing: {availability.reason}"
    if "vllm" in os.environ.get("AIFORGE_REQUIRE_ENGINES", ""):
        pytest.fail(message)
    pytest.skip(message)
