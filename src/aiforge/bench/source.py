"""The requests of a run, handed out one at a time: pure state machines, no I/O.

The runner asks a :class:`RequestSource` for the next request whenever the schedule lets
one go (a free slot, or a Poisson arrival) and tells it when one has finished, with the
answer's text. Independent requests are always ready; a chat conversation's next turn is
ready only once its previous turn has been answered (its history includes the answer).

A source hands out at most ``limit`` requests (None: as many as asked for, for runs bounded
by time).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol

from aiforge.bench.workload import (
    ChatWorkloadSpec,
    Conversation,
    LengthDistribution,
    TextTokenizer,
    chat_messages,
    make_conversation,
    random_prompt,
    system_prompt,
)

__all__ = ["BenchRequest", "ChatSource", "RandomSource", "RequestSource", "source_factory"]


@dataclass(frozen=True, slots=True)
class BenchRequest:
    """One request to send: a prompt (completions) or messages (chat), and its output cap."""

    index: int
    max_tokens: int
    prompt: str | None = None
    messages: list[dict[str, str]] | None = None
    conversation: int | None = None
    turn: int | None = None

    @property
    def kind(self) -> Literal["completions", "chat"]:
        return "chat" if self.messages is not None else "completions"


class RequestSource(Protocol):
    """Where the runner takes requests from."""

    def next_ready(self) -> BenchRequest | None:
        """The next request to send, or None when none is ready now (or none is left)."""
        ...

    def complete(self, request: BenchRequest, answer: str) -> None:
        """``request`` finished with ``answer`` (empty on error): its successor may follow."""
        ...

    @property
    def exhausted(self) -> bool:
        """True once every request has been handed out and none can follow."""
        ...


@dataclass
class RandomSource:
    """Independent requests: prompt and output lengths drawn per request, seeded by index.

    ``as_messages``: each prompt as one user message (the chat endpoint), else raw text.
    """

    tokenizer: TextTokenizer
    prompt_tokens: LengthDistribution
    output_tokens: LengthDistribution
    seed: int = 0
    limit: int | None = None
    as_messages: bool = True
    _issued: int = 0

    def next_ready(self) -> BenchRequest | None:
        if self.exhausted:
            return None
        index = self._issued
        self._issued += 1
        rng = random.Random(f"{self.seed}:lengths:{index}")
        length = self.prompt_tokens.sample(rng)
        prompt = random_prompt(index, length, self.tokenizer, self.seed)
        max_tokens = self.output_tokens.sample(rng)
        if self.as_messages:
            messages = [{"role": "user", "content": prompt}]
            return BenchRequest(index, max_tokens, messages=messages)
        return BenchRequest(index, max_tokens, prompt=prompt)

    def complete(self, request: BenchRequest, answer: str) -> None:
        return None

    @property
    def exhausted(self) -> bool:
        return self.limit is not None and self._issued >= self.limit


@dataclass
class _Chat:
    conversation: Conversation
    answers: list[str] = field(default_factory=list)


@dataclass
class ChatSource:
    """Multi-turn chats: conversations start in order, each next turn queues behind the
    turns already waiting once its previous turn is answered. Bounded by ``limit``, the
    run needs ``ceil(limit / turns)`` conversations and starts them all first; unbounded,
    it starts a new one whenever no turn is waiting. Output caps are drawn per
    turn from ``output_tokens``."""

    spec: ChatWorkloadSpec
    tokenizer: TextTokenizer
    output_tokens: LengthDistribution
    limit: int | None = None
    _issued: int = 0
    _started: int = 0
    _ready: deque[int] = field(default_factory=deque)
    _chats: dict[int, _Chat] = field(default_factory=dict)
    _systems: dict[int, str] = field(default_factory=dict)

    def next_ready(self) -> BenchRequest | None:
        if self.exhausted:
            return None
        # Bounded by a count: every conversation's first turn goes before any second
        # turn. Bounded by time: waiting turns go first, a new conversation when none is.
        if self.limit is not None and self._may_start_another():
            chat = self._start_conversation()
        elif self._ready:
            chat = self._chats[self._ready.popleft()]
        elif self._may_start_another():
            chat = self._start_conversation()
        else:
            return None
        return self._issue(chat)

    def complete(self, request: BenchRequest, answer: str) -> None:
        if request.conversation is None or request.conversation not in self._chats:
            return
        chat = self._chats[request.conversation]
        chat.answers.append(answer)
        if len(chat.answers) < len(chat.conversation.user_turns):
            self._ready.append(chat.conversation.id)
        else:
            del self._chats[chat.conversation.id]

    @property
    def exhausted(self) -> bool:
        if self.limit is not None and self._issued >= self.limit:
            return True
        return not self._chats and not self._may_start_another()

    def _may_start_another(self) -> bool:
        if self.limit is None:
            return True
        return self._started < -(-self.limit // self.spec.turns)

    def _start_conversation(self) -> _Chat:
        chat = _Chat(make_conversation(self._started, self.spec, self.tokenizer))
        self._chats[chat.conversation.id] = chat
        self._started += 1
        return chat

    def _system(self, index: int) -> str:
        if index not in self._systems:
            self._systems[index] = system_prompt(index, self.spec, self.tokenizer)
        return self._systems[index]

    def _issue(self, chat: _Chat) -> BenchRequest:
        conversation = chat.conversation
        turn = len(chat.answers)
        rng = random.Random(f"{self.spec.seed}:output:{conversation.id}:{turn}")
        messages = chat_messages(self._system(conversation.system), conversation, chat.answers)
        request = BenchRequest(
            self._issued, self.output_tokens.sample(rng), messages=messages,
            conversation=conversation.id, turn=turn,
        )  # fmt: skip
        self._issued += 1
        return request


def source_factory(
    workload: Literal["random", "chat"],
    tokenizer: TextTokenizer,
    *,
    prompt_tokens: LengthDistribution,
    output_tokens: LengthDistribution,
    chat: ChatWorkloadSpec | None = None,
    as_messages: bool = True,
) -> Callable[..., RequestSource]:
    """A maker of fresh sources of ``workload``, called as ``make(seed=..., limit=...)``
    (each load level and the warm-up get their own). The chat workload draws its user
    turns from ``chat`` (whose seed the call's replaces) and needs ``as_messages``."""
    if workload == "random":
        return lambda *, seed, limit: RandomSource(
            tokenizer, prompt_tokens, output_tokens, seed=seed, limit=limit,
            as_messages=as_messages,
        )  # fmt: skip
    if chat is None or not as_messages:
        raise ValueError("the chat workload needs its spec and the chat endpoint")
    spec = chat
    return lambda *, seed, limit: ChatSource(
        replace(spec, seed=seed), tokenizer, output_tokens, limit=limit
    )
