"""Runs one client's checks in the openai<3 venv and reports ``{check: null | traceback}``.

The target comes from the environment (``AIFORGE_BASE_URL``, ``AIFORGE_API_KEY``,
``AIFORGE_CHAT_MODEL``, ``AIFORGE_EMBEDDING_MODEL``), the checks to run from
``AIFORGE_CHECKS``; the report is the last line of stdout (``clients_support.run_checks``
reads it). This venv has no aiforge: everything a check needs is here.
"""

from __future__ import annotations

import json
import os
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

NO_THINKING: dict[str, Any] = {"chat_template_kwargs": {"enable_thinking": False}}
MAX_TOKENS = 12
STRUCTURED_MAX_TOKENS = 128
CITIES = ("Paris", "Tokyo")


@dataclass(frozen=True)
class Target:
    base_url: str
    api_key: str
    chat_model: str
    embedding_model: str


class Forecast(BaseModel):
    """Every field bounded, so random weights finish it (as in clients_support)."""

    model_config = ConfigDict(extra="forbid")

    unit: Literal["celsius", "fahrenheit"]
    raining: bool


def target_from_environment() -> Target:
    return Target(
        base_url=os.environ["AIFORGE_BASE_URL"],
        api_key=os.environ["AIFORGE_API_KEY"],
        chat_model=os.environ["AIFORGE_CHAT_MODEL"],
        embedding_model=os.environ["AIFORGE_EMBEDDING_MODEL"],
    )


def run(checks: Mapping[str, Callable[[Target], None]]) -> None:
    """Run the requested checks, each isolated, and print the JSON report."""
    target = target_from_environment()
    results: dict[str, str | None] = {}
    for name in filter(None, os.environ.get("AIFORGE_CHECKS", "").split(",")):
        check = checks.get(name)
        if check is None:
            results[name] = f"no check named {name!r}"
            continue
        try:
            check(target)
            results[name] = None
        except BaseException:
            results[name] = traceback.format_exc()
    print(json.dumps(results))
