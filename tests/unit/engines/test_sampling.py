"""Pure sampling: greedy, top-k, top-p, penalties, seeds, logprobs, constraints."""

from __future__ import annotations

import math

import pytest
import torch

from aiforge.engines.core import SamplingParams
from aiforge.engines.sampling import (
    LOGPROB_FLOOR,
    apply_penalties,
    apply_top_k,
    apply_top_p,
    make_generator,
    sample_batch,
    sample_token,
)


def _logits(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


class AllowOnly:
    """A TokenConstraint that allows a fixed set of tokens and finishes after one."""

    def __init__(self, allowed: set[int]) -> None:
        self.allowed = allowed
        self.accepted: list[int] = []

    def mask_logits(self, logits: torch.Tensor) -> None:
        keep = torch.zeros_like(logits, dtype=torch.bool)
        keep[list(self.allowed)] = True
        logits.masked_fill_(~keep, float("-inf"))

    def accept(self, token_id: int) -> None:
        self.accepted.append(token_id)

    def is_finished(self) -> bool:
        return bool(self.accepted)


def test_greedy_picks_argmax_and_leaves_input_untouched() -> None:
    logits = _logits([0.1, 3.0, 2.9, -1.0])
    before = logits.clone()
    token = sample_token(logits, SamplingParams(max_tokens=1, temperature=0), [], None)
    assert token.token_id == 1
    assert token.logprob is None
    assert torch.equal(logits, before)


def test_top_k_keeps_only_the_k_largest() -> None:
    out = apply_top_k(_logits([1.0, 5.0, 3.0, 4.0]), 2)
    assert torch.isinf(out[[0, 2]]).all()
    assert out[1] == 5.0
    assert out[3] == 4.0
    params = SamplingParams(max_tokens=1, temperature=1.0, top_k=1)
    draws = {sample_token(_logits([1.0, 5.0, 3.0]), params, [], None).token_id for _ in range(20)}
    assert draws == {1}


def test_top_p_keeps_the_smallest_set_reaching_the_mass() -> None:
    # probabilities 0.5, 0.3, 0.2 (as logs): top_p 0.6 keeps the first two.
    logits = torch.log(torch.tensor([0.5, 0.3, 0.2]))
    out = apply_top_p(logits, 0.6)
    assert torch.isfinite(out[:2]).all()
    assert torch.isinf(out[2])
    assert torch.isfinite(apply_top_p(logits, 0.5)[0])
    assert torch.isinf(apply_top_p(logits, 0.5)[1:]).all()
    assert torch.equal(apply_top_p(logits, 1.0), logits)


def test_tiny_top_p_is_greedy() -> None:
    params = SamplingParams(max_tokens=1, temperature=1.5, top_p=1e-6)
    logits = _logits([0.0, 0.5, 0.4])
    assert {sample_token(logits, params, [], None).token_id for _ in range(20)} == {1}


def test_penalties_follow_openai_and_vllm_semantics() -> None:
    logits = _logits([2.0, -2.0, 1.0, 0.0])
    rep = apply_penalties(logits, SamplingParams(max_tokens=1, repetition_penalty=2.0), [0, 1])
    assert rep.tolist() == [1.0, -4.0, 1.0, 0.0]
    freq = apply_penalties(logits, SamplingParams(max_tokens=1, frequency_penalty=0.5), [2, 2, 0])
    assert freq.tolist() == [1.5, -2.0, 0.0, 0.0]
    pres = apply_penalties(logits, SamplingParams(max_tokens=1, presence_penalty=1.0), [2, 2, 0])
    assert pres.tolist() == [1.0, -2.0, 0.0, 0.0]
    assert apply_penalties(logits, SamplingParams(max_tokens=1), [0, 1]) is logits


def test_penalty_changes_the_greedy_choice() -> None:
    logits = _logits([3.0, 2.5])
    params = SamplingParams(max_tokens=1, temperature=0, presence_penalty=1.0)
    assert sample_token(logits, params, [0], None).token_id == 1
    assert sample_token(logits, params, [], None).token_id == 0


def test_seeded_requests_reproduce_and_differ_by_seed() -> None:
    logits = torch.randn(1000, generator=torch.Generator().manual_seed(1))
    params = SamplingParams(max_tokens=1, temperature=1.0)

    def draw(seed: int) -> list[int]:
        generator = make_generator(seed)
        return [sample_token(logits, params, [], generator).token_id for _ in range(30)]

    assert draw(7) == draw(7)
    assert draw(7) != draw(8)
    assert make_generator(None) is None


def test_logprobs_are_a_distribution_and_include_the_sampled_token() -> None:
    logits = torch.randn(50, generator=torch.Generator().manual_seed(3))
    params = SamplingParams(max_tokens=1, temperature=0.7, logprobs=5, seed=1)
    token = sample_token(logits, params, [], make_generator(1))
    assert token.logprob is not None
    assert token.logprob <= 0
    assert len(token.top_logprobs) == 5
    values = [lp for _, lp in token.top_logprobs]
    assert values == sorted(values, reverse=True)
    full = torch.log_softmax(logits / 0.7, dim=-1)
    assert math.isclose(float(torch.logsumexp(full, dim=-1)), 0.0, abs_tol=1e-5)
    assert token.logprob == pytest.approx(float(full[token.token_id]), abs=1e-5)
    assert token.top_logprobs[0][0] == int(torch.argmax(logits))


def test_logprobs_zero_gives_only_the_sampled_token() -> None:
    params = SamplingParams(max_tokens=1, temperature=0, logprobs=0)
    token = sample_token(_logits([0.0, 1.0]), params, [], None)
    assert token.token_id == 1
    assert token.top_logprobs == ()
    assert token.logprob == pytest.approx(math.log(math.e / (1 + math.e)), abs=1e-6)


def test_constraint_masks_before_sampling_and_logprobs() -> None:
    constraint = AllowOnly({2, 3})
    logits = _logits([9.0, 8.0, 1.0, 0.5])
    params = SamplingParams(max_tokens=1, temperature=0, logprobs=3)
    token = sample_token(logits, params, [], None, constraint)
    assert token.token_id == 2
    ids = [i for i, _ in token.top_logprobs]
    assert ids[:2] == [2, 3]
    assert token.top_logprobs[2][1] == LOGPROB_FLOOR  # a forbidden token, reported finitely
    assert constraint.accepted == []  # the engine accepts, not the sampler
    sampled = {
        sample_token(logits, SamplingParams(max_tokens=1), [], None, constraint).token_id
        for _ in range(30)
    }
    assert sampled <= {2, 3}


def test_sample_batch_greedy_rows_take_each_rows_argmax() -> None:
    logits = torch.tensor([[0.0, 2.0, 1.0], [5.0, -1.0, 4.9], [0.0, 0.0, 0.5]])
    greedy = SamplingParams(max_tokens=1, temperature=0)
    assert sample_batch(logits, [greedy] * 3) == [1, 0, 2]
    assert sample_batch(logits.to(torch.bfloat16), [greedy] * 3) == [1, 0, 2]


def test_sample_batch_truncates_each_row_with_its_own_top_k_and_top_p() -> None:
    row = [4.0, 3.9, 3.8, 3.7, -50.0]
    logits = torch.tensor([row, row, row, row])
    params = [
        SamplingParams(max_tokens=1, temperature=0),  # greedy: token 0
        SamplingParams(max_tokens=1, temperature=1.0, top_k=2),  # {0, 1}
        SamplingParams(max_tokens=1, temperature=1.0, top_p=0.3),  # {0, 1}: mass 0.28 then 0.53
        SamplingParams(max_tokens=1, temperature=5.0),  # anything but the -50 token
    ]
    seen: list[set[int]] = [set(), set(), set(), set()]
    torch.manual_seed(0)
    for _ in range(200):
        for i, token in enumerate(sample_batch(logits, params)):
            seen[i].add(token)
    assert seen[0] == {0}
    assert seen[1] == {0, 1}
    assert seen[2] == {0, 1}
    assert seen[3] == {0, 1, 2, 3}
    # The same sets as the per-row path allows.
    for p, allowed in zip(params[1:3], seen[1:3], strict=True):
        kept = apply_top_p(apply_top_k(torch.tensor(row) / p.temperature, p.top_k), p.top_p)
        assert set(torch.nonzero(kept > float("-inf")).flatten().tolist()) == allowed


def test_sample_batch_draws_follow_the_temperature_scaled_distribution() -> None:
    logits = torch.tensor([[0.0, math.log(3.0)]] * 2)
    params = [SamplingParams(max_tokens=1, temperature=1.0)] * 2
    torch.manual_seed(1)
    ones = sum(sum(sample_batch(logits, params)) for _ in range(2000))
    assert ones / 4000 == pytest.approx(0.75, abs=0.03)
