"""OpenAI's logit_bias: applied before sampling, validated at the API edge."""

from __future__ import annotations

import pytest
import torch

from aiforge.engines.core import SamplingParams
from aiforge.engines.sampling import sample_token
from aiforge.engines.server.params import parse_logit_bias
from aiforge.protocol.openai.errors import OpenAIError


def test_a_large_bias_forces_a_greedy_token_and_a_ban_removes_one() -> None:
    logits = torch.tensor([5.0, 1.0, 0.0, -1.0])
    forced = SamplingParams(max_tokens=1, temperature=0.0, logit_bias=((2, 100.0),))
    assert sample_token(logits, forced, [], None, None).token_id == 2
    banned = SamplingParams(max_tokens=1, temperature=0.0, logit_bias=((0, -100.0),))
    assert sample_token(logits, banned, [], None, None).token_id == 1
    assert logits.tolist() == [5.0, 1.0, 0.0, -1.0]  # the caller's row is untouched


def test_parse_logit_bias_accepts_openai_maps() -> None:
    assert parse_logit_bias({"12": -100, "7": 2.5}, 13) == ((12, -100.0), (7, 2.5))
    assert parse_logit_bias(None, 13) == ()
    assert parse_logit_bias({}, 13) == ()


@pytest.mark.parametrize(
    "bias",
    [
        {"abc": 1.0},
        {"-3": 1.0},
        {"5": 101.0},
        {"13": 1.0},
        {"9" * 5000: 1.0},
        {str(i): 1.0 for i in range(1025)},
    ],
)
def test_bad_logit_bias_is_a_400_naming_it(bias: dict[str, float]) -> None:
    with pytest.raises(OpenAIError) as info:
        parse_logit_bias(bias, 13 if len(bias) == 1 else 2000)
    assert info.value.param == "logit_bias"
    assert info.value.status_code == 400
