"""Chat templates rendered in a bounded Jinja sandbox (issue 7, item 5).

A chat template is code: the model's own comes from a model repository, and a request may
bring one (``chat_template``, refused unless the admin allows it). Both render here, in
:class:`~jinja2.sandbox.ImmutableSandboxedEnvironment` with the globals and filters
transformers gives templates (so the output is the same as ``apply_chat_template``'s), and
under a budget: every loop iteration, call, attribute or item lookup, and ``range`` element
costs a step, the render has a wall-clock deadline checked at each step, ``*`` and ``**``
may not build huge values, and the output has a size bound. A template that loops for ever
is refused in bounded time with a 400, and nothing here blocks the event loop: callers run
:meth:`ChatTemplates.render` in a worker thread.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
from jinja2 import nodes
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from transformers import PreTrainedTokenizerBase

from aiforge.protocol.openai.errors import OpenAIError, invalid_param

__all__ = ["MAX_TEMPLATE_CHARS", "MAX_TEMPLATE_STEPS", "ChatTemplates", "RenderLimits"]

MAX_TEMPLATE_STEPS = 4_000_000
"""Steps (iterations, calls, lookups) one render may take; real templates take thousands."""
MAX_TEMPLATE_CHARS = 64 * 1024
"""Characters of a template a request may bring."""
_MAX_POWER_BITS = 1 << 16

RESERVED_KWARGS = frozenset(
    {
        "messages",
        "conversation",
        "tools",
        "documents",
        "add_generation_prompt",
        "continue_final_message",
        "tokenize",
        "return_dict",
        "return_tensors",
        "return_assistant_tokens_mask",
        "padding",
        "truncation",
        "max_length",
        "tokenizer_kwargs",
        "sanitize_control_tokens",
    }
)
"""``chat_template_kwargs`` the request itself sets, or that mean nothing to a template."""


@dataclass(frozen=True, slots=True)
class RenderLimits:
    timeout_s: float = 2.0
    max_output_chars: int = 4 << 20
    max_steps: int = MAX_TEMPLATE_STEPS


class _Exhausted(Exception):
    """The render ran out of steps, time or output room."""


class _Budget:
    def __init__(self, limits: RenderLimits) -> None:
        self.steps = limits.max_steps
        self.deadline = time.monotonic() + limits.timeout_s
        self.limits = limits

    def spend(self, steps: int = 1) -> None:
        self.steps -= steps
        if self.steps < 0:
            raise _Exhausted(f"more than {self.limits.max_steps} steps")
        if time.monotonic() > self.deadline:
            raise _Exhausted(f"more than {self.limits.timeout_s:g} s")


_budget: ContextVar[_Budget | None] = ContextVar("aiforge_template_budget", default=None)


def _spend(steps: int = 1) -> None:
    budget = _budget.get()
    if budget is not None:
        budget.spend(steps)


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    """The sandbox, charging the current render's budget at every hook it offers."""

    intercepted_binops = frozenset({"*", "**"})

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        # Every for loop iterates through a counting filter, so a loop whose body does
        # nothing but print still spends a step per iteration.
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Filter(loop.iter, "aiforge_counted", [], [], None, None)
        return tree

    def call(self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _spend()
        return super().call(__context, __obj, *args, **kwargs)

    def getattr(self, obj: Any, attribute: str) -> Any:
        _spend()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _spend()
        return super().getitem(obj, argument)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _spend()
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(times, int):
                    budget = _budget.get()
                    room = budget.limits.max_output_chars if budget else MAX_TEMPLATE_CHARS
                    if len(seq) * times > room:
                        raise _Exhausted("a repetition too large")
        if (
            operator == "**"
            and isinstance(left, int)
            and isinstance(right, int)
            and max(left.bit_length(), 1) * abs(right) > _MAX_POWER_BITS
        ):
            raise _Exhausted("a power too large")
        return super().call_binop(context, operator, left, right)


@jinja2.pass_context
def _counted(_context: Context, iterable: Iterable[Any]) -> Iterator[Any]:
    for item in iterable:
        _spend()
        yield item


def _range(*args: int) -> range:
    numbers = range(*args)
    _spend(len(numbers))
    if len(numbers) > 100_000:  # jinja's safe_range bound
        raise _Exhausted("a range too large")
    return numbers


class _GenerationBlock(jinja2.ext.Extension):
    """``{% generation %}…{% endgeneration %}`` (transformers' assistant-mask marker) renders
    its body as is: aiforge does not compute assistant masks."""

    tags = {"generation"}  # noqa: RUF012 - jinja declares it a plain attribute

    def parse(self, parser: Any) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.Scope(body).set_lineno(lineno)


def _raise_exception(message: str) -> None:
    raise jinja2.TemplateError(message)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: Any = None,
    sort_keys: bool = False,
) -> str:
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


class _TemplateDict:
    """``dict(...)`` for templates, without the class itself (as transformers gives it)."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        return dict(*args, **kwargs)


class _TemplateNamespace(jinja2.utils.Namespace):
    """``namespace()`` without underscore-prefixed attributes (as transformers guards it)."""

    def __init__(*args: Any, **kwargs: Any) -> None:
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _TemplateNamespace._check(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _TemplateNamespace._check(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError("namespace attributes may not start with '_'")


def _environment() -> _BoundedSandbox:
    env = _BoundedSandbox(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[_GenerationBlock, jinja2.ext.loopcontrols],
    )
    env.filters["tojson"] = _tojson
    env.filters["aiforge_counted"] = _counted
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["dict"] = _TemplateDict()
    env.globals["namespace"] = _TemplateNamespace
    env.globals["range"] = _range
    return env


class ChatTemplates:
    """Renders chat prompts for one tokenizer; thread-safe (compiled templates are cached)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, limits: RenderLimits) -> None:
        self._tokenizer = tokenizer
        self._limits = limits
        self._special = dict(tokenizer.special_tokens_map)
        self._env = _environment()
        self._compiled: OrderedDict[str, jinja2.Template] = OrderedDict()
        self._lock = threading.Lock()

    def render(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None,
        kwargs: dict[str, Any],
        template: str | None = None,
    ) -> str:
        """The prompt text, with the generation prompt added. ``template``: one the request
        brought (already allowed by the caller). Raises a 400 :class:`OpenAIError` naming
        ``chat_template``, ``chat_template_kwargs`` or ``messages``."""
        for key in kwargs:
            if key in RESERVED_KWARGS:
                raise invalid_param(
                    f"`chat_template_kwargs` may not set `{key}`: the request sets it.",
                    "chat_template_kwargs",
                )
        blame = "chat_template" if template is not None else "messages"
        source = template if template is not None else self._model_template(tools)
        compiled = self._compile(source, blame)
        variables = {
            **self._special,
            **kwargs,
            "messages": [_alias_reasoning(m) for m in messages],
            "tools": tools,
            "documents": None,
            "add_generation_prompt": True,
        }
        budget = _Budget(self._limits)
        token = _budget.set(budget)
        try:
            return self._generate(compiled, variables, budget)
        except _Exhausted as exc:
            raise invalid_param(
                f"The chat template took too much work to render ({exc}); it is refused.",
                blame,
            ) from None
        except jinja2.exceptions.SecurityError:
            raise invalid_param(
                "The chat template tried an operation the template sandbox forbids.", blame
            ) from None
        except jinja2.TemplateError as exc:
            raise invalid_param(
                f"The chat template failed on these messages: {exc.message}", blame
            ) from None
        except Exception:  # a Python error inside the template: say what, not where
            raise invalid_param(
                "The chat template could not render these messages with these "
                "`chat_template_kwargs`; check their values and types.",
                "chat_template_kwargs" if kwargs.keys() - {"enable_thinking"} else blame,
            ) from None
        finally:
            _budget.reset(token)

    def _generate(
        self, compiled: jinja2.Template, variables: dict[str, Any], budget: _Budget
    ) -> str:
        pieces: list[str] = []
        size = 0
        for piece in compiled.generate(**variables):
            size += len(piece)
            if size > self._limits.max_output_chars:
                raise _Exhausted(f"more than {self._limits.max_output_chars} characters")
            budget.spend()
            pieces.append(piece)
        return "".join(pieces)

    def _model_template(self, tools: list[dict[str, Any]] | None) -> str:
        try:
            return str(self._tokenizer.get_chat_template(None, tools))
        except ValueError as exc:
            raise OpenAIError(
                "This model has no chat template; use /v1/completions.",
                param="messages",
                code="model_not_supported",
            ) from exc

    def _compile(self, source: str, blame: str) -> jinja2.Template:
        with self._lock:
            cached = self._compiled.get(source)
            if cached is not None:
                self._compiled.move_to_end(source)
                return cached
        if blame == "chat_template" and len(source) > MAX_TEMPLATE_CHARS:
            raise invalid_param(
                f"`chat_template` may hold at most {MAX_TEMPLATE_CHARS} characters.", blame
            )
        try:
            compiled = self._env.from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise invalid_param(
                f"The chat template does not parse (line {exc.lineno}: {exc.message}).", blame
            ) from None
        except Exception:
            raise invalid_param("The chat template does not compile.", blame) from None
        with self._lock:
            self._compiled[source] = compiled
            if len(self._compiled) > 32:
                self._compiled.popitem(last=False)
        return compiled


def _alias_reasoning(message: dict[str, Any]) -> dict[str, Any]:
    """As transformers does: reasoning under ``thinking`` too (gpt-oss templates read it)."""
    reasoning = message.get("reasoning_content")
    if reasoning is None:
        return message
    return {"thinking": reasoning, **message, "reasoning_content": reasoning}
