"""``aiforge chat``: a streaming terminal chat against aiforge or any OpenAI endpoint.

The conversation rules (commands, history, splitting reasoning from the answer) are pure
and live in :class:`ChatSession` and :class:`ThinkSplitter`; :func:`chat_loop` wires them
to the official ``openai`` client and a rich console.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Annotated, Any

import typer
from rich.console import Console

from aiforge.config import Settings

HELP = "/exit quits, /reset clears the conversation, /help shows this; Ctrl-C stops a reply."
THINK_START = "<think>"
THINK_END = "</think>"


class Action(Enum):
    SEND = "send"
    EXIT = "exit"
    RESET = "reset"
    HELP = "help"
    NOTHING = "nothing"
    UNKNOWN = "unknown"


def parse_input(line: str) -> Action:
    """What a line typed at the prompt asks for."""
    text = line.strip()
    if not text:
        return Action.NOTHING
    if not text.startswith("/"):
        return Action.SEND
    return {
        "/exit": Action.EXIT, "/quit": Action.EXIT, "/reset": Action.RESET,
        "/clear": Action.RESET, "/help": Action.HELP, "/?": Action.HELP,
    }.get(text.split()[0].lower(), Action.UNKNOWN)  # fmt: skip


@dataclass
class ChatSession:
    """The conversation so far: an optional system prompt, then alternating turns."""

    system: str | None = None
    turns: list[dict[str, str]] = field(default_factory=list)

    def messages(self) -> list[dict[str, str]]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + self.turns

    def add_user(self, text: str) -> None:
        self.turns.append({"role": "user", "content": text})

    def add_assistant(self, text: str) -> None:
        """Record a reply (also a partial one, cut short by Ctrl-C)."""
        self.turns.append({"role": "assistant", "content": text})

    def reset(self) -> None:
        self.turns.clear()


class ThinkSplitter:
    """Splits streamed content into (reasoning, answer) pieces by ``<think>`` tags, for
    servers that leave Qwen's reasoning inline instead of in ``reasoning_content``.

    A tag split across chunks is held back until it is complete.
    """

    def __init__(self) -> None:
        self._in_think = False
        self._pending = ""

    def feed(self, text: str) -> Iterator[tuple[str, str]]:
        """Yield ``("reasoning" | "answer", text)`` pieces for a chunk of content."""
        self._pending += text
        while self._pending:
            tag = THINK_END if self._in_think else THINK_START
            kind = "reasoning" if self._in_think else "answer"
            index = self._pending.find(tag)
            if index >= 0:
                if index:
                    yield kind, self._pending[:index]
                self._pending = self._pending[index + len(tag) :]
                self._in_think = not self._in_think
                continue
            keep = _partial_suffix(self._pending, tag)
            emit = self._pending[: len(self._pending) - keep]
            self._pending = self._pending[len(emit) :]
            if emit:
                yield kind, emit
            return

    def flush(self) -> Iterator[tuple[str, str]]:
        if self._pending:
            yield ("reasoning" if self._in_think else "answer"), self._pending
            self._pending = ""


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of ``text`` that starts ``tag``."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0


@dataclass
class ReplyStats:
    completion_tokens: int | None = None
    seconds: float = 0.0


def stream_reply(
    client: Any, *, model: str, messages: list[dict[str, str]], extra_body: dict[str, Any],
    on_piece: Callable[[str, str], None],
) -> ReplyStats:  # fmt: skip
    """Stream one reply, calling ``on_piece(kind, text)`` as it arrives; return its stats.

    Lets ``KeyboardInterrupt`` through after closing the stream: the caller keeps what
    was shown so far through ``on_piece``.
    """
    started = time.monotonic()
    stream = client.chat.completions.create(
        model=model, messages=messages, stream=True,
        stream_options={"include_usage": True}, extra_body=extra_body or None,
    )  # fmt: skip
    splitter = ThinkSplitter()
    stats = ReplyStats()
    try:
        for chunk in stream:
            if chunk.usage is not None:
                stats.completion_tokens = chunk.usage.completion_tokens
            for choice in chunk.choices[:1]:
                delta = choice.delta
                reasoning = getattr(delta, "reasoning_content", None) or getattr(
                    delta, "reasoning", None
                )
                if reasoning:
                    on_piece("reasoning", reasoning)
                for kind, text in splitter.feed(delta.content or ""):
                    on_piece(kind, text)
        for kind, text in splitter.flush():
            on_piece(kind, text)
    finally:
        stream.close()
    stats.seconds = time.monotonic() - started
    return stats


class _Transcript:
    """Prints pieces as they stream (reasoning dimmed) and keeps the answer text."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.answer: list[str] = []
        self._last_kind = ""

    def __call__(self, kind: str, text: str) -> None:
        if kind == "answer" and self._last_kind == "reasoning":
            self.console.print()
        if kind == "answer":
            self.answer.append(text)
        self._last_kind = kind
        style = "dim italic" if kind == "reasoning" else None
        self.console.print(text, style=style, end="", markup=False, highlight=False)


def chat_loop(
    client: Any, *, model: str, session: ChatSession, console: Console,
    read_line: Callable[[], str], extra_body: dict[str, Any] | None = None,
) -> None:  # fmt: skip
    """Read lines and answer them until ``/exit``, end of input or Ctrl-C at the prompt."""
    import openai

    console.print(f"[bold]aiforge chat[/bold] with [cyan]{model}[/cyan] — {HELP}", highlight=False)
    while True:
        try:
            line = read_line()
        except (EOFError, KeyboardInterrupt):
            console.print()
            return
        action = parse_input(line)
        if action is Action.EXIT:
            return
        if action is Action.RESET:
            session.reset()
            console.print("[dim](conversation cleared)[/dim]")
        elif action is Action.HELP:
            console.print(HELP, markup=False)
        elif action is Action.UNKNOWN:
            console.print(f"unknown command {line.strip()!r}; {HELP}", markup=False)
        elif action is Action.SEND:
            session.add_user(line.strip())
            transcript = _Transcript(console)
            try:
                stats = stream_reply(
                    client, model=model, messages=session.messages(),
                    extra_body=extra_body or {}, on_piece=transcript,
                )  # fmt: skip
                console.print()
                _print_stats(console, stats)
            except KeyboardInterrupt:
                console.print("\n[dim](stopped)[/dim]")
            except openai.APIStatusError as exc:
                session.turns.pop()
                console.print(f"\n[red]error {exc.status_code}:[/red] {_error_message(exc)}")
                continue
            except openai.APIConnectionError as exc:
                session.turns.pop()
                console.print(f"\n[red]error:[/red] {exc}; is the server still running?")
                continue
            # Qwen's template drops earlier reasoning anyway: history keeps the answer only.
            session.add_assistant("".join(transcript.answer))


def _print_stats(console: Console, stats: ReplyStats) -> None:
    if stats.completion_tokens and stats.seconds > 0:
        rate = stats.completion_tokens / stats.seconds
        console.print(
            f"[dim]{stats.completion_tokens} tokens, {rate:.1f} tok/s[/dim]", highlight=False
        )


def _error_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
    return str(exc)


def chat_command(
    url: Annotated[
        str | None,
        typer.Option("--url", help="OpenAI-compatible base URL (default: the local aiforge)."),
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Model to chat with (default: the first served).")
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option("--api-key", envvar=["AIFORGE_API_KEY", "OPENAI_API_KEY"], help="API key."),
    ] = None,
    system: Annotated[str | None, typer.Option("--system", help="A system prompt.")] = None,
    no_think: Annotated[
        bool, typer.Option("--no-think", help="Ask Qwen3 to answer without reasoning first.")
    ] = False,
) -> None:
    """Chat with a served model in the terminal, streaming; reasoning is shown dimmed."""
    import openai

    from aiforge.platform.api.client import stored_admin_key

    settings = Settings()
    base_url = url or f"http://{settings.host}:{settings.port}/v1"
    key = api_key or settings.admin_key or stored_admin_key(settings.data_dir) or "none"
    client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=600)
    console = Console()
    try:
        chosen = model or _first_model(client)
    except openai.APIConnectionError:
        console.print(f"[red]error:[/red] cannot reach {base_url}; is `aiforge serve` running?")
        raise typer.Exit(1) from None
    except openai.APIStatusError as exc:
        console.print(f"[red]error {exc.status_code}:[/red] {_error_message(exc)}")
        raise typer.Exit(1) from None
    extra = {"chat_template_kwargs": {"enable_thinking": False}} if no_think else {}
    chat_loop(
        client, model=chosen, session=ChatSession(system=system), console=console,
        read_line=lambda: console.input("[bold green]> [/bold green]"), extra_body=extra,
    )  # fmt: skip


def _first_model(client: Any) -> str:
    models = list(client.models.list())
    if not models:
        raise typer.BadParameter("the server lists no models; pass --model")
    return str(models[0].id)


def register(app: typer.Typer) -> None:
    """Add ``chat`` to the ``aiforge`` command."""
    app.command("chat")(chat_command)
