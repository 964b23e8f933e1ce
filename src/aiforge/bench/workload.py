"""What ``aiforge bench`` sends: seeded prompts of measured lengths, single or multi-turn.

Two workloads, both pure and deterministic in their seed and tokenizer:

* **random**: independent requests, each a prompt of words cut to a length drawn from a
  :class:`LengthDistribution`, and an output length drawn from another.
* **chat**: conversations that share a few long system prompts (round robin) and grow
  turn by turn. The answers are not known in advance: the caller passes each
  conversation's answers so far to :func:`chat_messages`, so turn ``t`` resends the
  system prompt, every earlier user message and every earlier answer — the shape that
  makes a replica's prefix cache matter. (``benchmarks/routing.py`` uses it too.)

Lengths are counted in tokens of a real tokenizer when one is given (any object with
``encode``/``decode``, see :class:`TextTokenizer`; :func:`load_tokenizer`), else in
whitespace-separated words (:class:`WordTokenizer`).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

__all__ = [
    "ChatWorkload",
    "ChatWorkloadSpec",
    "Conversation",
    "HFTokenizer",
    "LengthDistribution",
    "TextTokenizer",
    "WordTokenizer",
    "build_chat_workload",
    "chat_messages",
    "load_tokenizer",
    "make_conversation",
    "random_prompt",
    "system_prompt",
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


# -- tokenizers ------------------------------------------------------------------------------


class TextTokenizer(Protocol):
    """What the workloads need of a tokenizer: text to ids and back."""

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


class WordTokenizer:
    """One "token" per whitespace-separated word: lengths in words, when no real
    tokenizer is given. Ids are indices into a vocabulary grown as words are seen."""

    unit = "words"

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self._words: list[str] = []

    def encode(self, text: str) -> list[int]:
        words = text.split()
        for word in words:
            if word not in self._ids:
                self._ids[word] = len(self._words)
                self._words.append(word)
        return [self._ids[word] for word in words]

    def decode(self, ids: list[int]) -> str:
        return " ".join(self._words[i] for i in ids)


class HFTokenizer:
    """A Hugging Face ``tokenizer.json`` (the ``tokenizers`` library), special tokens off."""

    unit = "tokens"

    def __init__(self, tokenizer_json: Path) -> None:
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_file(str(tokenizer_json))

    def encode(self, text: str) -> list[int]:
        return list(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: list[int]) -> str:
        return str(self._tokenizer.decode(ids))


def load_tokenizer(path: Path) -> HFTokenizer:
    """The tokenizer at ``path``: a ``tokenizer.json`` or a model directory holding one.

    Raises ``ValueError`` when there is none there.
    """
    candidate = path / "tokenizer.json" if path.is_dir() else path
    if not candidate.is_file():
        raise ValueError(f"no tokenizer.json at {path}")
    try:
        return HFTokenizer(candidate)
    except Exception as error:  # tokenizers raises its own untyped exceptions
        raise ValueError(f"cannot read the tokenizer at {candidate}: {error}") from error


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


# -- length distributions --------------------------------------------------------------------

_FIXED = re.compile(r"^(?:fixed:)?(\d+)$")
_RANDOM = re.compile(r"^(?:random|uniform):(\d+)(?:-|,)(\d+)$")
_NORMAL = re.compile(r"^normal:(\d+(?:\.\d+)?),(\d+(?:\.\d+)?)$")


@dataclass(frozen=True, slots=True)
class LengthDistribution:
    """A length in tokens (or words): ``fixed`` (``low``), ``random`` (uniform over
    ``[low, high]``) or ``normal`` (``mean``, ``stddev``, rounded and clipped to ``[1,
    mean + 4 stddev]``)."""

    kind: Literal["fixed", "random", "normal"]
    low: int = 1
    high: int = 1
    mean: float = 0.0
    stddev: float = 0.0

    @classmethod
    def parse(cls, text: str) -> LengthDistribution:
        """``128`` / ``fixed:128``, ``random:64-256``, ``normal:128,32``; ``ValueError``
        with the accepted forms otherwise."""
        spec = text.strip().lower()
        if match := _FIXED.match(spec):
            value = int(match.group(1))
            distribution = cls("fixed", low=value, high=value)
        elif match := _RANDOM.match(spec):
            distribution = cls("random", low=int(match.group(1)), high=int(match.group(2)))
        elif match := _NORMAL.match(spec):
            mean, stddev = float(match.group(1)), float(match.group(2))
            distribution = cls(
                "normal", low=1, high=max(1, round(mean + 4 * stddev)), mean=mean, stddev=stddev
            )
        else:
            raise ValueError(
                f"bad length {text!r}: use N, fixed:N, random:MIN-MAX or normal:MEAN,STDDEV"
            )
        if distribution.low < 1 or distribution.low > distribution.high:
            raise ValueError(f"bad length {text!r}: lengths must be at least 1, MIN <= MAX")
        if distribution.kind == "normal" and distribution.mean < 1:
            raise ValueError(f"bad length {text!r}: the mean must be at least 1")
        return distribution

    def sample(self, rng: random.Random) -> int:
        """One length, drawn with ``rng``."""
        if self.kind == "fixed":
            return self.low
        if self.kind == "random":
            return rng.randint(self.low, self.high)
        return min(self.high, max(1, round(rng.gauss(self.mean, self.stddev))))

    def describe(self) -> str:
        if self.kind == "fixed":
            return str(self.low)
        if self.kind == "random":
            return f"random:{self.low}-{self.high}"
        return f"normal:{self.mean:g},{self.stddev:g}"


# -- the random workload ---------------------------------------------------------------------


def random_prompt(index: int, length: int, tokenizer: TextTokenizer, seed: int) -> str:
    """Request ``index``'s prompt of the random workload: ``length`` tokens, distinct from
    every other request's from its first word (no prefix shared by chance)."""
    rng = random.Random(f"{seed}:prompt:{index}")
    return text_of_tokens(rng, tokenizer, length, f"Request {index}:")


# -- the chat workload -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChatWorkloadSpec:
    """The knobs of a chat workload; equal specs and tokenizers give equal workloads."""

    conversations: int = 12
    turns: int = 6
    system_prompts: int = 4
    system_tokens: int = 1500
    user_tokens_min: int = 50
    user_tokens_max: int = 100
    max_tokens: int = 24
    """Tokens the model generates per turn (at most; exactly with ``ignore_eos``)."""
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
    """One chat: its system prompt (an index into the workload's system prompts) and its
    user messages, one per turn."""

    id: int
    system: int
    user_turns: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ChatWorkload:
    spec: ChatWorkloadSpec
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


def system_prompt(index: int, spec: ChatWorkloadSpec, tokenizer: TextTokenizer) -> str:
    """System prompt ``index`` of the workload ``spec`` describes."""
    rng = random.Random(f"{spec.seed}:system:{index}")
    persona = _PERSONAS[index % len(_PERSONAS)]
    lead = f"You are {persona} (deployment {index}). Follow these instructions."
    return text_of_tokens(rng, tokenizer, spec.system_tokens, lead)


def _user_turn(
    conversation: int, turn: int, spec: ChatWorkloadSpec, tokenizer: TextTokenizer
) -> str:
    rng = random.Random(f"{spec.seed}:user:{conversation}:{turn}")
    tokens = rng.randint(spec.user_tokens_min, spec.user_tokens_max)
    lead = f"Question {turn + 1} of customer {conversation}:"
    return text_of_tokens(rng, tokenizer, tokens, lead)


def make_conversation(
    conversation: int, spec: ChatWorkloadSpec, tokenizer: TextTokenizer
) -> Conversation:
    """Conversation ``conversation`` (any index, also past ``spec.conversations``: a run
    bounded by time makes them as it needs them)."""
    return Conversation(
        id=conversation,
        system=conversation % spec.system_prompts,
        user_turns=tuple(_user_turn(conversation, t, spec, tokenizer) for t in range(spec.turns)),
    )


def build_chat_workload(spec: ChatWorkloadSpec, tokenizer: TextTokenizer) -> ChatWorkload:
    """The workload ``spec`` describes: deterministic in ``spec`` (its seed included)."""
    systems = tuple(system_prompt(i, spec, tokenizer) for i in range(spec.system_prompts))
    conversations = tuple(make_conversation(c, spec, tokenizer) for c in range(spec.conversations))
    return ChatWorkload(spec=spec, system_prompts=systems, conversations=conversations)


def chat_messages(
    system: str, conversation: Conversation, answers: list[str]
) -> list[dict[str, str]]:
    """The messages of ``conversation``'s next turn under system prompt ``system``, given
    its answers so far.

    Turn ``len(answers)``: the system prompt, then each earlier user message followed by
    its answer, then this turn's user message.
    """
    turn = len(answers)
    if turn >= len(conversation.user_turns):
        raise ValueError(f"conversation {conversation.id} has only {turn} turns")
    messages = [{"role": "system", "content": system}]
    for user, answer in zip(conversation.user_turns, answers, strict=False):
        messages.append({"role": "user", "content": user})
        messages.append({"role": "assistant", "content": answer})
    messages.append({"role": "user", "content": conversation.user_turns[turn]})
    return messages
