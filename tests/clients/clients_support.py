"""What every client check shares: the target, the requests' shapes, and the runner for
clients that live outside the project venv.

The demo models have random weights, so checks assert shapes, types and that structured
answers parse, never content. Two things keep a random model's answers short and
parseable, and they are what a user of the demo needs too (``docs/clients.md``):

* thinking off (``chat_template_kwargs.enable_thinking: false`` on chat completions,
  ``reasoning.effort: "none"`` on the Responses API): a thinking Qwen3 may think until
  ``max_tokens`` runs out, before any constrained JSON or tool call starts;
* schemas whose values are bounded (enums, booleans): a constrained *free* string from
  random weights rarely closes its quote within a few tokens.

Clients whose releases still pin ``openai<3`` (LlamaIndex, instructor) run in
``tests/clients/.venv-openai2``; the npm clients run under ``node``. Each such script runs
the named checks against the target given in its environment and prints one JSON line,
``{check: null | "traceback"}``.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

CHAT_MODEL = "demo"
EMBEDDING_MODEL = "demo-embedding"
MAX_TOKENS = 12
"""For free text: random weights never stop early, so every token is paid for."""
STRUCTURED_MAX_TOKENS = 128
"""Enough for a bounded JSON object or tool call: the demo's tokenizer spells the markup and
field names in short tokens, and a tool call's grammar allows a whitespace at each gap."""
NO_THINKING: dict[str, Any] = {"chat_template_kwargs": {"enable_thinking": False}}
"""Chat completions' ``extra_body`` that turns Qwen3's thinking off (vLLM's spelling too)."""
NO_REASONING: dict[str, Any] = {"effort": "none"}
"""The Responses API's ``reasoning`` that turns thinking off."""
CITIES = ("Paris", "Tokyo")

CLIENTS_DIR = Path(__file__).resolve().parent
OPENAI2_PYTHON = CLIENTS_DIR / ".venv-openai2" / "bin" / "python"
NODE_DIR = CLIENTS_DIR / "node"
INSTALL_HINT = "run tests/clients/install (scripts/install --test does)"
SCRIPT_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class ClientTarget:
    """Where a client points: aiforge's OpenAI base URL, a project key, the model names."""

    base_url: str
    api_key: str
    chat_model: str = CHAT_MODEL
    embedding_model: str = EMBEDDING_MODEL

    def environment(self) -> dict[str, str]:
        """The target as the out-of-venv scripts read it."""
        return {
            "AIFORGE_BASE_URL": self.base_url,
            "AIFORGE_API_KEY": self.api_key,
            "AIFORGE_CHAT_MODEL": self.chat_model,
            "AIFORGE_EMBEDDING_MODEL": self.embedding_model,
        }


class Forecast(BaseModel):
    """The structured-output type: every field bounded, so random weights finish it."""

    model_config = ConfigDict(extra="forbid")

    unit: Literal["celsius", "fahrenheit"]
    raining: bool


WEATHER_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string", "enum": list(CITIES)}},
    "required": ["city"],
    "additionalProperties": False,
}


def get_weather(city: Literal["Paris", "Tokyo"]) -> str:
    """Current weather in a city."""
    return f"18 degrees and dry in {city}"


def run_checks(argv: Sequence[str], target: ClientTarget, checks: Sequence[str]) -> dict[str, Any]:
    """Run an out-of-venv check script for ``checks``; its ``{check: error or None}``."""
    env = {**os.environ, **target.environment(), "AIFORGE_CHECKS": ",".join(checks)}
    done = subprocess.run(
        list(argv), capture_output=True, text=True, env=env, timeout=SCRIPT_TIMEOUT_S,
        cwd=CLIENTS_DIR, check=False,
    )  # fmt: skip
    lines = done.stdout.strip().splitlines()
    try:
        results: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        raise AssertionError(
            f"{argv[-1]} exited {done.returncode} without results:\n"
            f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        ) from None
    missing = set(checks) - set(results)
    assert not missing, f"{argv[-1]} did not report {sorted(missing)}:\n{done.stderr[-4000:]}"
    return results


def assert_passed(results: dict[str, Any], check: str) -> None:
    """Fail with the script's own traceback when ``check`` failed there."""
    error = results[check]
    assert error is None, f"{check} failed in the client:\n{error}"
