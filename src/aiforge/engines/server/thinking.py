"""Qwen3's ``<think>…</think>`` block at the token level: where a sequence is, how many
reasoning tokens it has spent, and the constraint that enforces a thinking budget.

The text-level split into ``reasoning_content`` and ``content`` is
:mod:`~aiforge.engines.server.reasoning`'s; this module works on token ids, for what must be
exact or enforced inside the engine's sampling loop:

* :class:`ThinkingTracker` counts ``usage.completion_tokens_details.reasoning_tokens``: the
  tokens generated inside the think block, its ``<think>`` and ``</think>`` markers not
  counted (as vLLM counts them).
* :class:`ThinkingConstraint` is the :class:`~aiforge.engines.core.TokenConstraint` of a
  request that has a thinking budget, a grammar for its answer (structured output, forced
  tool calls), or both. Once ``budget`` reasoning tokens are spent without ``</think>`` it
  forces the close (``</think>\\n\\n``, one token per step: every other token masked) and
  the answer follows; the grammar only starts after the block is closed, and while a
  grammar waits the model may not end the sequence inside the block. So a budgeted
  thinking model always reaches its answer (given ``max_tokens`` room for it).

Where a sequence starts comes from the rendered prompt
(:func:`~aiforge.engines.server.reasoning.prompt_thinking_state`): ``"undecided"`` (the
first generated token decides: ``<think>`` opens the block, anything else is the answer),
``"reasoning"`` (the template opened ``<think>`` itself, as Qwen3's Thinking-2507 models'
do) or ``"content"`` (the template wrote an empty, closed block: thinking off).
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from transformers import PreTrainedTokenizerBase

from aiforge.engines.core import TokenConstraint
from aiforge.engines.server.reasoning import THINK_END, THINK_START

if TYPE_CHECKING:
    import torch

__all__ = ["ThinkMarkers", "ThinkPhase", "ThinkingConstraint", "ThinkingTracker"]

FORCED_CLOSE = THINK_END + "\n\n"
"""What the engine writes when the budget is spent (Qwen's own spacing after the block)."""


class ThinkPhase(enum.Enum):
    START = "start"
    """Nothing generated yet and the prompt left it open: the first token decides."""
    THINKING = "thinking"
    ANSWER = "answer"


_START_PHASES = {
    "undecided": ThinkPhase.START,
    "reasoning": ThinkPhase.THINKING,
    "content": ThinkPhase.ANSWER,
}


@dataclass(frozen=True, slots=True)
class ThinkMarkers:
    """The token ids of a tokenizer's think markers."""

    start: int
    end: int
    close: tuple[int, ...]
    """Forced when the budget is spent: :data:`FORCED_CLOSE`, starting with :attr:`end`."""

    @classmethod
    def of(cls, tokenizer: PreTrainedTokenizerBase) -> ThinkMarkers | None:
        """The markers, or None when ``<think>``/``</think>`` are not single tokens (a model
        without Qwen3-style thinking: nothing to count or enforce)."""
        start = tokenizer.encode(THINK_START, add_special_tokens=False)
        end = tokenizer.encode(THINK_END, add_special_tokens=False)
        if len(start) != 1 or len(end) != 1:
            return None
        close = tuple(int(t) for t in tokenizer.encode(FORCED_CLOSE, add_special_tokens=False))
        if not close or close[0] != end[0]:
            close = (int(end[0]),)
        return cls(start=int(start[0]), end=int(end[0]), close=close)


class ThinkingTracker:
    """Follows one sequence's tokens through the think block (pure)."""

    def __init__(self, markers: ThinkMarkers, start: str) -> None:
        self._markers = markers
        self.phase = _START_PHASES[start]
        self.reasoning_tokens = 0

    def push(self, token_id: int) -> None:
        """The sequence's next generated token."""
        if self.phase is ThinkPhase.START:
            opened = token_id == self._markers.start
            self.phase = ThinkPhase.THINKING if opened else ThinkPhase.ANSWER
        elif self.phase is ThinkPhase.THINKING:
            if token_id == self._markers.end:
                self.phase = ThinkPhase.ANSWER
            else:
                self.reasoning_tokens += 1


class ThinkingConstraint:
    """A sequence's thinking budget and (optionally) its answer's grammar, as one
    :class:`~aiforge.engines.core.TokenConstraint` (see the module docstring).

    ``budget`` None: no cap; 0: no thinking (a prompt that opened the block gets it closed
    at once, and ``<think>`` cannot open one). ``stop_token_ids`` are masked while thinking
    when there is an ``answer`` grammar, so the sequence cannot end before its answer.
    """

    def __init__(
        self,
        markers: ThinkMarkers,
        *,
        start: str,
        budget: int | None = None,
        answer: TokenConstraint | None = None,
        stop_token_ids: frozenset[int] = frozenset(),
    ) -> None:
        self._markers = markers
        self._tracker = ThinkingTracker(markers, start)
        self._budget = budget
        self._answer = answer
        self._held_open = sorted(stop_token_ids) if answer is not None else []
        self._forcing: deque[int] = deque()
        self._force_if_spent()

    @property
    def reasoning_tokens(self) -> int:
        return self._tracker.reasoning_tokens

    @property
    def phase(self) -> ThinkPhase:
        return self._tracker.phase

    def mask_logits(self, logits: torch.Tensor) -> None:
        if self._forcing:
            logits.fill_(float("-inf"))
            logits[self._forcing[0]] = 0.0
            return
        phase = self._tracker.phase
        if phase is ThinkPhase.START:
            self._mask_start(logits)
        elif phase is ThinkPhase.THINKING:
            if self._held_open:
                logits[self._held_open] = float("-inf")
        elif self._answer is not None:
            self._answer.mask_logits(logits)

    def _mask_start(self, logits: torch.Tensor) -> None:
        """The first token: the answer's grammar, or ``<think>`` unless thinking is off."""
        think = self._markers.start
        keep = logits[think].clone()
        if self._answer is not None:
            self._answer.mask_logits(logits)
        logits[think] = float("-inf") if self._budget == 0 else keep

    def accept(self, token_id: int) -> None:
        if self._forcing:  # the close the engine writes is never the answer's
            self._forcing.popleft()
            self._tracker.push(token_id)
            return
        before = self._tracker.phase
        self._tracker.push(token_id)
        answering = self._tracker.phase is ThinkPhase.ANSWER and before is not ThinkPhase.THINKING
        if answering and self._answer is not None:
            self._answer.accept(token_id)
        self._force_if_spent()

    def is_finished(self) -> bool:
        return (
            not self._forcing
            and self._tracker.phase is ThinkPhase.ANSWER
            and self._answer is not None
            and self._answer.is_finished()
        )

    def _force_if_spent(self) -> None:
        spent = self._budget is not None and self.reasoning_tokens >= self._budget
        if spent and self._tracker.phase is ThinkPhase.THINKING:
            self._forcing.extend(self._markers.close)
