"""The multi-turn chat workload of ``benchmarks/routing.py``: pure, seeded, no I/O.

A workload is a few long system prompts and ``conversations`` chats, each bound to one
system prompt (round robin over them) and carrying ``turns`` user messages. The model's
answers are not known in advance: the benchmark appends each answer to its conversation's
history as it arrives, so turn ``t`` resends the system prompt, every earlier user message
and every earlier answer — the shape that makes a replica's prefix cache worth routing to.

Text is made of English words drawn from a seeded generator and cut to a token count with
the real tokenizer (any object with ``encode``/``decode``, see :class:`TextTokenizer`), so
the same seed and tokenizer always give the same prompts, token for token.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "Conversation",
    "TextTokenizer",
    "Workload",
    "WorkloadSpec",
    "build_workload",
    "chat_messages",
    "text_of_tokens",
]

_WORDS = (
    "account", "answer", "archive", "balance", "batch", "billing", "border", "bridge",
    "budget", "cabinet", "calendar", "capacity", "cargo", "channel", "checkout", "claim",
    "client", "cluster", "column", "contract", "courier", "credit", "customer", "dashboard",
    "deadline", "delivery", "deposit", "detail", "device", "discount", "dispatch", "district",
    "document", "engine", "estimate", "exchange", "export", "factory", "feature", "field",
    "filter", "forecast", "freight", "garden", "harbor", "history", "holiday", "import",
    "inbox", "invoice", "journey", "kitchen", "ledger", "license", "limit", "margin",
    "market", "meeting", "message", "meter", "network", "notice", "office", "order",
    "package", "partner", "payment", "pension", "permit", "pipeline", "platform", "policy",
    "portal", "premium", "profile", "project", "quarter", "quota", "receipt", "record",
    "refund", "region", "release", "report", "request", "reserve", "route", "schedule",
    "season", "sensor", "service", "shipment", "signal", "station", "storage", "supplier",
    "support", "surface", "tariff", "ticket", "timeline", "transfer", "update", "vendor",
    "voucher", "warehouse", "window", "workshop", "always", "briefly", "carefully",
    "clearly", "exactly", "first", "gently", "never", "only", "politely", "quickly", "then",
    "check", "confirm", "explain", "list", "mention", "offer", "quote", "refuse", "remind",
    "repeat", "suggest", "summarize", "verify", "the", "a", "each", "every", "its", "their",
    "with", "without", "before", "after", "when", "unless", "and", "or", "but", "for",
)  # fmt: skip

_PERSONAS = (
    "Harbor, the support assistant of a freight forwarding company",
    "Ledger, the bookkeeping assistant of an accounting firm",
    "Atlas, the travel planning assistant of a booking site",
    "Pulse, the triage assistant of a telehealth clinic",
    "Quill, the drafting assistant of a law office",
    "Forge, the operations assistant of a machine workshop",
    "Meadow, the customer assistant of a garden centre",
    "Circuit, the help-desk assistant of an electronics retailer",
)
"""Openings of the system prompts: distinct from the first character, as separate
applications' prompts are (a router keying on the leading text must tell them apart)."""


class TextTokenizer(Protocol):
    """What the workload needs of a tokenizer: text to ids and back."""

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    """The knobs of a workload; equal specs and tokenizers give equal workloads."""

    conversations: int = 12
    turns: int = 6
    system_prompts: int = 4
    system_tokens: int = 1500
    user_tokens_min: int = 50
    user_tokens_max: int = 100
    max_tokens: int = 24
    """Tokens the model generates per turn (``ignore_eos``: exactly this many)."""
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("conversations", "turns", "system_prompts", "system_tokens", "max_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if not 1 <= self.user_tokens_min <= self.user_tokens_max:
            raise ValueError("need 1 <= user_tokens_min <= user_tokens_max")

    @property
    def requests(self) -> int:
        return self.conversations * self.turns

    def max_prompt_tokens(self, template_tokens_per_message: int = 8) -> int:
        """An upper bound on the last turn's prompt: what ``--max-model-len`` must allow."""
        per_turn = self.user_tokens_max + self.max_tokens + 2 * template_tokens_per_message
        return self.system_tokens + template_tokens_per_message + self.turns * per_turn


@dataclass(frozen=True, slots=True)
class Conversation:
    """One chat: its system prompt (an index into :attr:`Workload.system_prompts`) and
    its user messages, one per turn."""

    id: int
    system: int
    user_turns: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Workload:
    spec: WorkloadSpec
    system_prompts: tuple[str, ...]
    conversations: tuple[Conversation, ...]

    def prompt_tokens(self, tokenizer: TextTokenizer) -> dict[str, int]:
        """Token counts of the text the workload sends, answers and chat template aside:
        ``system`` (every distinct system prompt once) and ``user`` (every user turn)."""
        return {
            "system": sum(len(tokenizer.encode(text)) for text in self.system_prompts),
            "user": sum(
                len(tokenizer.encode(text))
                for conversation in self.conversations
                for text in conversation.user_turns
            ),
        }


def text_of_tokens(rng: random.Random, tokenizer: TextTokenizer, tokens: int, lead: str) -> str:
    """``lead`` followed by random words, cut to ``tokens`` tokens of ``tokenizer``."""
    words = [lead]
    # About 1.2 tokens per word with these words: draw enough, then cut on token ids.
    words += rng.choices(_WORDS, k=tokens)
    text = " ".join(words)
    ids = tokenizer.encode(text)
    if len(ids) <= tokens:
        return text
    return tokenizer.decode(ids[:tokens]).rstrip()


def _system_prompt(index: int, spec: WorkloadSpec, tokenizer: TextTokenizer) -> str:
    rng = random.Random(f"{spec.seed}:system:{index}")
    persona = _PERSONAS[index % len(_PERSONAS)]
    lead = f"You are {persona} (deployment {index}). Follow these instructions."
    return text_of_tokens(rng, tokenizer, spec.system_tokens, lead)


def _user_turn(conversation: int, turn: int, spec: WorkloadSpec, tokenizer: TextTokenizer) -> str:
    rng = random.Random(f"{spec.seed}:user:{conversation}:{turn}")
    tokens = rng.randint(spec.user_tokens_min, spec.user_tokens_max)
    lead = f"Question {turn + 1} of customer {conversation}:"
    return text_of_tokens(rng, tokenizer, tokens, lead)


def build_workload(spec: WorkloadSpec, tokenizer: TextTokenizer) -> Workload:
    """The workload ``spec`` describes: deterministic in ``spec`` (its seed included)."""
    systems = tuple(_system_prompt(i, spec, tokenizer) for i in range(spec.system_prompts))
    conversations = tuple(
        Conversation(
            id=c,
            system=c % spec.system_prompts,
            user_turns=tuple(_user_turn(c, t, spec, tokenizer) for t in range(spec.turns)),
        )
        for c in range(spec.conversations)
    )
    return Workload(spec=spec, system_prompts=systems, conversations=conversations)


def chat_messages(
    workload: Workload, conversation: Conversation, answers: list[str]
) -> list[dict[str, str]]:
    """The messages of ``conversation``'s next turn, given its answers so far.

    Turn ``len(answers)``: the system prompt, then each earlier user message followed by
    its answer, then this turn's user message.
    """
    turn = len(answers)
    if turn >= len(conversation.user_turns):
        raise ValueError(f"conversation {conversation.id} has only {turn} turns")
    messages = [{"role": "system", "content": workload.system_prompts[conversation.system]}]
    for user, answer in zip(conversation.user_turns, answers, strict=False):
        messages.append({"role": "user", "content": user})
        messages.append({"role": "assistant", "content": answer})
    messages.append({"role": "user", "content": conversation.user_turns[turn]})
    return messages
