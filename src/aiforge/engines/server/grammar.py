"""Constrained decoding with xgrammar: structured output and forced tool calls.

Grammars are compiled once per distinct schema (cached) against the served tokenizer;
each sequence gets its own :class:`GrammarConstraint` (a matcher) implementing the
engine's :class:`~aiforge.engines.core.TokenConstraint`. JSON is generated without free
whitespace (``any_whitespace=False``) so a grammar cannot trap a model in endless spaces.
A thinking model's grammar waits for its ``<think>`` block to close
(:class:`~aiforge.engines.server.thinking.ThinkingConstraint` wraps it).

Every grammar passes through :func:`strict_json_strings` before it is compiled: output
that claims a schema must parse with strict parsers (``json.loads``, pydantic, JavaScript's
``JSON.parse``), and xgrammar's own strings are not strict (see there).
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import xgrammar as xgr
from transformers import PreTrainedTokenizerBase

from aiforge.engines.server.tool_calls import TOOL_CALL_END, TOOL_CALL_START
from aiforge.protocol.openai.errors import invalid_param

if TYPE_CHECKING:
    import torch


class GrammarConstraint:
    """One sequence's grammar state: masks logits, advances on each sampled token."""

    def __init__(self, compiled: xgr.CompiledGrammar, vocab_size: int) -> None:
        self._matcher = xgr.GrammarMatcher(compiled)
        self._bitmask = xgr.allocate_token_bitmask(1, vocab_size)

    def mask_logits(self, logits: torch.Tensor) -> None:
        self._matcher.fill_next_token_bitmask(self._bitmask)
        row = logits.unsqueeze(0)
        bitmask = self._bitmask.to(logits.device) if logits.device.type != "cpu" else self._bitmask
        xgr.apply_token_bitmask_inplace(row, bitmask)

    def accept(self, token_id: int) -> None:
        if not self._matcher.is_terminated():
            self._matcher.accept_token(token_id)

    def is_finished(self) -> bool:
        return bool(self._matcher.is_terminated())


def tool_call_structural_tag(
    tools: Sequence[tuple[str, dict[str, Any]]], *, parallel: bool
) -> dict[str, Any]:
    """A structural tag for Qwen tool calls to the given tools: exactly one call, or
    (``parallel``) one or more.

    Each tool is ``(name, parameters JSON schema)``; every call is written exactly as
    ``<tool_call>\\n{"name": "X", "arguments": ARGS}\\n</tool_call>``. After the last call
    only a stop token is allowed, so the generation ends there.
    """
    tags = [
        {
            "type": "tag",
            "begin": f'{TOOL_CALL_START}\n{{"name": {json.dumps(name)}, "arguments": ',
            "content": {"type": "json_schema", "json_schema": params, "max_whitespace_cnt": 1},
            "end": f"}}\n{TOOL_CALL_END}",
        }
        for name, params in tools
    ]
    return {
        "type": "structural_tag",
        "format": {
            "type": "tags_with_separator",
            "tags": tags,
            "separator": "\n",
            "at_least_one": True,
            "stop_after_first": not parallel,
        },
    }


# xgrammar 0.2.9 writes a length-bounded string's character (``minLength``/``maxLength``,
# also property names under ``propertyNames``) as a rule of this one class: raw control
# characters pass, escapes cannot be written. Its escape rule takes any ``\uXXXX``, lone
# surrogates too, which pydantic (and any UTF-8 encoder) refuses.
_LOOSE_CHAR_RULE = re.compile(r'^(\S+) ::= \(\(\[\^\\"\\\\\\r\\n\]\)\)$', re.MULTILINE)
_ESCAPE_RULE = re.compile(r"^basic_escape ::= .*$", re.MULTILINE)
_STRICT_RULES = r"""
strict_json_char ::= [^\0-\x1f"\\] | "\\" strict_json_escape
strict_json_escape ::= ["\\/bfnrt] | "u" strict_json_bmp | "u" strict_json_pair
strict_json_bmp ::= [0-9a-cA-CefEF] HEX HEX HEX | [dD] [0-7] HEX HEX
strict_json_pair ::= [dD] [89abAB] HEX HEX "\\u" [dD] [c-fC-F] HEX HEX
""".replace("HEX", "[0-9a-fA-F]")


def strict_json_strings(grammar: xgr.Grammar) -> xgr.Grammar:
    """``grammar`` with JSON strings as RFC 8259 and strict parsers have them.

    A string character is any character but the control characters U+0000–U+001F, ``"``
    and ``\\``, or an escape; a ``\\u`` escape is a non-surrogate or a surrogate pair. A
    bounded string counts an escape as the one character it stands for, as JSON Schema
    does. Called on every grammar before compiling.
    """
    text = _LOOSE_CHAR_RULE.sub(r"\1 ::= strict_json_char", str(grammar))
    text = _ESCAPE_RULE.sub("basic_escape ::= strict_json_escape", text)
    return xgr.Grammar.from_ebnf(text + _STRICT_RULES)


class GrammarCompilerCache:
    """Compiles grammars for one tokenizer, caching them by their canonical JSON.

    Compilation is CPU-bound (milliseconds to a second): callers run it off the event loop.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        *,
        vocab_size: int,
        stop_token_ids: Sequence[int],
        max_entries: int = 256,
    ) -> None:
        info = xgr.TokenizerInfo.from_huggingface(
            tokenizer, vocab_size=vocab_size, stop_token_ids=list(stop_token_ids)
        )
        self.vocab_size = vocab_size
        self._compiler = xgr.GrammarCompiler(info, max_threads=2)
        self._cache: OrderedDict[str, xgr.CompiledGrammar] = OrderedDict()
        self._max_entries = max_entries
        self._lock = threading.Lock()

    def json_schema(self, schema: dict[str, Any] | None, *, param: str) -> xgr.CompiledGrammar:
        """A grammar for JSON matching ``schema`` (any JSON object when None)."""
        body = schema if schema is not None else {"type": "object"}
        key = "schema:" + json.dumps(body, sort_keys=True)
        return self._get(
            key,
            lambda: self._compiler.compile_grammar(
                strict_json_strings(
                    xgr.Grammar.from_json_schema(
                        json.dumps(body), any_whitespace=False, strict_mode=True
                    )
                )
            ),
            param=param,
        )

    def tool_calls(
        self, tools: Sequence[tuple[str, dict[str, Any]]], *, parallel: bool, param: str
    ) -> xgr.CompiledGrammar:
        tag = tool_call_structural_tag(tools, parallel=parallel)
        key = "tools:" + json.dumps(tag, sort_keys=True)
        return self._get(
            key,
            lambda: self._compiler.compile_grammar(
                strict_json_strings(xgr.Grammar.from_structural_tag(json.dumps(tag)))
            ),
            param=param,
        )

    def _get(self, key: str, compile_: Any, *, param: str) -> xgr.CompiledGrammar:
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
        try:
            compiled: xgr.CompiledGrammar = compile_()
        except (RuntimeError, ValueError, TypeError) as exc:
            raise invalid_param(f"Invalid schema: {_first_line(exc)}", param) from exc
        with self._lock:
            self._cache[key] = compiled
            if len(self._cache) > self._max_entries:
                self._cache.popitem(last=False)
        return compiled


def _first_line(exc: Exception) -> str:
    """xgrammar errors start with a timestamp and a C++ source location; keep the message."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text.split(": ", 1)[1] if text.startswith("[") and ": " in text else text
