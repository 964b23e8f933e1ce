"""The think block at the token level: counting reasoning tokens, enforcing a budget."""

from __future__ import annotations

import math

import torch
from transformers import PreTrainedTokenizerBase

from aiforge.engines.server.thinking import (
    ThinkingConstraint,
    ThinkingTracker,
    ThinkMarkers,
    ThinkPhase,
)

THINK, END, BREAK, EOS = 1, 2, 3, 9
MARKERS = ThinkMarkers(start=THINK, end=END, close=(END, BREAK))
VOCAB = 16


class DigitsThenStop:
    """A stand-in grammar: allows only tokens 5 and 6, finished after two tokens."""

    def __init__(self) -> None:
        self.accepted: list[int] = []

    def mask_logits(self, logits: torch.Tensor) -> None:
        keep = logits[[5, 6]].clone()
        logits.fill_(-math.inf)
        logits[[5, 6]] = keep

    def accept(self, token_id: int) -> None:
        self.accepted.append(token_id)

    def is_finished(self) -> bool:
        return len(self.accepted) >= 2


def allowed(constraint: ThinkingConstraint) -> set[int]:
    logits = torch.zeros(VOCAB)
    constraint.mask_logits(logits)
    return {i for i in range(VOCAB) if logits[i] > -math.inf}


def test_markers_of_the_qwen3_tokenizer(tokenizer: PreTrainedTokenizerBase) -> None:
    markers = ThinkMarkers.of(tokenizer)
    assert markers is not None
    assert tokenizer.decode([markers.start]) == "<think>"
    assert tokenizer.decode(list(markers.close)) == "</think>\n\n"
    assert markers.close[0] == markers.end


def test_tracker_counts_tokens_inside_the_block_markers_excluded() -> None:
    tracker = ThinkingTracker(MARKERS, "undecided")
    for token in [THINK, 7, 7, 7, END, 8, 8]:
        tracker.push(token)
    assert tracker.reasoning_tokens == 3
    assert tracker.phase is ThinkPhase.ANSWER


def test_tracker_from_a_prompt_that_opened_the_block() -> None:
    tracker = ThinkingTracker(MARKERS, "reasoning")
    for token in [7, 7, END, 8]:
        tracker.push(token)
    assert tracker.reasoning_tokens == 2


def test_tracker_counts_nothing_when_the_answer_comes_first_or_thinking_is_off() -> None:
    for start, tokens in [("undecided", [8, THINK, 7, END]), ("content", [THINK, 7, 7])]:
        tracker = ThinkingTracker(MARKERS, start)
        for token in tokens:
            tracker.push(token)
        assert tracker.reasoning_tokens == 0


def test_budget_forces_the_close_then_frees_the_answer() -> None:
    constraint = ThinkingConstraint(MARKERS, start="undecided", budget=2)
    for token in [THINK, 7, 7]:
        assert allowed(constraint) == set(range(VOCAB))
        constraint.accept(token)
    assert allowed(constraint) == {END}
    constraint.accept(END)
    assert allowed(constraint) == {BREAK}
    constraint.accept(BREAK)
    assert allowed(constraint) == set(range(VOCAB))
    assert constraint.reasoning_tokens == 2
    assert constraint.phase is ThinkPhase.ANSWER
    assert not constraint.is_finished()  # no grammar: the model ends the answer itself


def test_a_natural_close_within_budget_forces_nothing() -> None:
    constraint = ThinkingConstraint(MARKERS, start="undecided", budget=5)
    for token in [THINK, 7, END]:
        constraint.accept(token)
    assert allowed(constraint) == set(range(VOCAB))
    assert constraint.reasoning_tokens == 1


def test_budget_zero_on_an_opened_prompt_closes_at_once() -> None:
    constraint = ThinkingConstraint(MARKERS, start="reasoning", budget=0)
    assert allowed(constraint) == {END}
    constraint.accept(END)
    constraint.accept(BREAK)
    assert constraint.phase is ThinkPhase.ANSWER
    assert constraint.reasoning_tokens == 0


def test_budget_zero_cannot_open_a_block() -> None:
    constraint = ThinkingConstraint(MARKERS, start="undecided", budget=0)
    assert allowed(constraint) == set(range(VOCAB)) - {THINK}


def test_grammar_starts_after_the_forced_close_and_eos_waits_for_it() -> None:
    grammar = DigitsThenStop()
    constraint = ThinkingConstraint(
        MARKERS, start="undecided", budget=1, answer=grammar, stop_token_ids=frozenset({EOS})
    )
    # The first token: the grammar's or <think>.
    assert allowed(constraint) == {THINK, 5, 6}
    constraint.accept(THINK)
    # Thinking: anything but the end of the sequence.
    assert allowed(constraint) == set(range(VOCAB)) - {EOS}
    constraint.accept(7)
    assert allowed(constraint) == {END}
    constraint.accept(END)
    assert allowed(constraint) == {BREAK}
    constraint.accept(BREAK)
    assert grammar.accepted == []  # the forced close is not the answer's
    assert allowed(constraint) == {5, 6}
    constraint.accept(5)
    constraint.accept(6)
    assert grammar.accepted == [5, 6]
    assert constraint.is_finished()


def test_answer_first_goes_straight_to_the_grammar() -> None:
    grammar = DigitsThenStop()
    constraint = ThinkingConstraint(MARKERS, start="undecided", budget=4, answer=grammar)
    constraint.accept(5)
    assert constraint.phase is ThinkPhase.ANSWER
    assert grammar.accepted == [5]
    assert allowed(constraint) == {5, 6}
