"""Per-request bounds a replica enforces before any work (issue 7, item 5).

A request that could stall the replica for everyone — a huge prompt, hundreds of prompts
times ``n``, a schema whose grammar takes a minute to compile, a chat template that loops
for ever — is refused up front with a 400 that names the parameter. The numbers come from
:class:`aiforge.config.Settings` (``AIFORGE_*``); the checks are pure.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiforge.protocol.openai.errors import invalid_param

if TYPE_CHECKING:
    from aiforge.config import Settings

__all__ = ["RequestLimits"]


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """The bounds; see the settings of the same names for what each means."""

    allow_request_chat_template: bool = False
    chat_template_timeout_s: float = 2.0
    max_prompt_chars: int = 1 << 20
    max_prompt_tokens: int | None = None
    max_sequences: int = 128
    max_json_schema_bytes: int = 128 * 1024
    max_json_schema_enum_values: int = 1000
    image_max_bytes: int = 10 * 1024 * 1024
    image_max_pixels: int = 32 * 1024 * 1024
    image_max_per_request: int = 16

    @classmethod
    def from_settings(cls, settings: Settings) -> RequestLimits:
        return cls(
            allow_request_chat_template=settings.allow_request_chat_template,
            chat_template_timeout_s=settings.chat_template_timeout_s,
            max_prompt_chars=settings.max_prompt_chars,
            max_prompt_tokens=settings.max_prompt_tokens,
            max_sequences=settings.max_sequences_per_request,
            max_json_schema_bytes=settings.max_json_schema_bytes,
            max_json_schema_enum_values=settings.max_json_schema_enum_values,
            image_max_bytes=settings.image_max_bytes,
            image_max_pixels=settings.image_max_pixels,
            image_max_per_request=settings.image_max_per_request,
        )

    def check_prompt_chars(self, texts: Iterable[str], param: str) -> None:
        """Before tokenizing: the texts' characters in all."""
        total = sum(len(text) for text in texts)
        if total > self.max_prompt_chars:
            raise invalid_param(
                f"The prompt is {total} characters long; this server takes at most "
                f"{self.max_prompt_chars} per request.",
                param,
                code="prompt_too_long",
            )

    def check_prompt_tokens(self, tokens: int, param: str) -> None:
        """After tokenizing, one prompt (the model's context is checked separately)."""
        if self.max_prompt_tokens is not None and tokens > self.max_prompt_tokens:
            raise invalid_param(
                f"The prompt has {tokens} tokens; this server takes at most "
                f"{self.max_prompt_tokens} per prompt.",
                param,
                code="prompt_too_long",
            )

    def check_sequences(self, prompts: int, n: int) -> None:
        """Prompts times ``n``: how many sequences one request asks the engine for."""
        if prompts * n > self.max_sequences:
            raise invalid_param(
                f"This request asks for {prompts} prompt(s) x n={n} = {prompts * n} "
                f"completions; this server generates at most {self.max_sequences} per request.",
                "n" if n > 1 else "prompt",
            )

    def check_json_schema(self, schema: Any, param: str) -> None:
        """A schema's size and enum values, before its grammar is compiled."""
        size = len(json.dumps(schema, ensure_ascii=False).encode())
        if size > self.max_json_schema_bytes:
            raise invalid_param(
                f"The JSON schema is {size} bytes; this server takes at most "
                f"{self.max_json_schema_bytes}.",
                param,
            )
        values = _enum_values(schema)
        if values > self.max_json_schema_enum_values:
            raise invalid_param(
                f"The JSON schema has {values} enum values; this server takes at most "
                f"{self.max_json_schema_enum_values} across all enums.",
                param,
            )


def _enum_values(schema: Any) -> int:
    """How many ``enum`` values (and ``const`` ones) the schema holds, at any depth."""
    count = 0
    stack = [schema]
    while stack:  # no recursion: a deeply nested schema cannot exhaust the stack
        node = stack.pop()
        if isinstance(node, dict):
            enum = node.get("enum")
            if isinstance(enum, list):
                count += len(enum)
            if "const" in node:
                count += 1
            stack.extend(value for key, value in node.items() if key not in ("enum", "const"))
        elif isinstance(node, list):
            stack.extend(node)
    return count
