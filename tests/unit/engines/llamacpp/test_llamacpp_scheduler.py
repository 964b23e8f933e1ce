"""The llama.cpp batch scheduler: pure, no llama.cpp needed."""

from __future__ import annotations

import pytest

from aiforge.engines.llamacpp.scheduler import (
    BatchScheduler,
    BatchToken,
    SampledOutput,
    SequenceSpec,
    StepPlan,
)

EOS = 99


def spec(rid: str, prompt: list[int], max_tokens: int = 10) -> SequenceSpec:
    return SequenceSpec(rid, tuple(prompt), max_tokens, frozenset({EOS}))


def sampler(plan: StepPlan, token: int = 7) -> list[SampledOutput]:
    return [SampledOutput(rid, token) for rid, _ in plan.sample]


def test_prefill_then_decode_positions() -> None:
    sched = BatchScheduler(max_num_seqs=2, max_batch_tokens=16, max_model_len=64)
    sched.add(spec("a", [1, 2, 3]))
    plan = sched.schedule()
    assert plan.tokens == (
        BatchToken(0, 1, 0, False),
        BatchToken(0, 2, 1, False),
        BatchToken(0, 3, 2, True),
    )
    assert plan.sample == (("a", 2),)
    events = sched.update_from_output([SampledOutput("a", 42)])
    assert [(e.request_id, e.event.token_id, e.event.finish_reason) for e in events] == [
        ("a", 42, None)
    ]
    plan = sched.schedule()
    assert plan.tokens == (BatchToken(0, 42, 3, True),)
    assert plan.sample == (("a", 0),)


def test_request_joins_running_batch_at_token_boundary() -> None:
    sched = BatchScheduler(max_num_seqs=4, max_batch_tokens=16, max_model_len=64)
    sched.add(spec("a", [1, 2]))
    sched.update_from_output(sampler(sched.schedule()))
    sched.add(spec("b", [5, 6, 7]))
    plan = sched.schedule()
    # a decodes one token while b prefills in the same batch, with its own sequence id.
    assert plan.tokens[0] == BatchToken(0, 7, 2, True)
    assert [t.seq_id for t in plan.tokens[1:]] == [1, 1, 1]
    assert plan.sample == (("a", 0), ("b", 3))
    assert sched.num_running == 2


def test_prefill_is_chunked_by_the_batch_budget_and_decode_goes_first() -> None:
    sched = BatchScheduler(max_num_seqs=2, max_batch_tokens=4, max_model_len=64)
    sched.add(spec("a", [1]))
    sched.update_from_output(sampler(sched.schedule()))
    sched.add(spec("b", list(range(10, 20))))
    first = sched.schedule()
    assert len(first.tokens) == 4
    assert first.sample == (("a", 0),)  # b's chunk ends mid-prompt: no logits yet
    assert [t.position for t in first.tokens[1:]] == [0, 1, 2]
    sched.update_from_output(sampler(first))
    second = sched.schedule()
    assert [t.position for t in second.tokens[1:]] == [3, 4, 5]
    sched.update_from_output(sampler(second))
    third = sched.schedule()
    assert [t.position for t in third.tokens[1:]] == [6, 7, 8]
    sched.update_from_output(sampler(third))
    fourth = sched.schedule()
    assert [t.position for t in fourth.tokens[1:]] == [9]
    assert fourth.sample == (("a", 0), ("b", 1))


def test_waiting_until_a_sequence_id_frees_up() -> None:
    sched = BatchScheduler(max_num_seqs=1, max_batch_tokens=8, max_model_len=64)
    sched.add(spec("a", [1], max_tokens=2))
    sched.add(spec("b", [2]))
    plan = sched.schedule()
    assert {t.seq_id for t in plan.tokens} == {0}
    assert sched.num_waiting == 1
    sched.update_from_output(sampler(plan))
    events = sched.update_from_output(sampler(sched.schedule()))
    assert events[0].event.finish_reason == "length"
    plan = sched.schedule()
    # a left: its KV is cleared before b reuses sequence id 0 in the same step.
    assert plan.released_seq_ids == (0,)
    assert plan.tokens == (BatchToken(0, 2, 0, True),)


def test_stop_token_and_constraint_finish_with_stop() -> None:
    sched = BatchScheduler(max_num_seqs=2, max_batch_tokens=8, max_model_len=64)
    sched.add(spec("a", [1]))
    sched.add(spec("b", [2]))
    plan = sched.schedule()
    events = sched.update_from_output(
        [SampledOutput("a", EOS), SampledOutput("b", 5, constraint_finished=True)]
    )
    assert [e.event.finish_reason for e in events] == ["stop", "stop"]
    assert plan.has_work
    assert not sched.has_unfinished
    assert sorted(sched.schedule().released_seq_ids) == [0, 1]


def test_max_model_len_ends_with_length() -> None:
    sched = BatchScheduler(max_num_seqs=1, max_batch_tokens=8, max_model_len=4)
    sched.add(spec("a", [1, 2, 3], max_tokens=100))
    events = sched.update_from_output(sampler(sched.schedule()))
    assert events[0].event.finish_reason == "length"


def test_abort_running_releases_its_kv_and_ignores_late_outputs() -> None:
    sched = BatchScheduler(max_num_seqs=2, max_batch_tokens=8, max_model_len=64)
    sched.add(spec("a", [1]))
    sched.add(spec("b", [2]))
    plan = sched.schedule()
    assert sched.abort("a")
    events = sched.update_from_output(sampler(plan))
    assert [e.request_id for e in events] == ["b"]
    nxt = sched.schedule()
    assert nxt.released_seq_ids == (0,)
    assert [t.seq_id for t in nxt.tokens] == [1]
    assert not sched.abort("a")


def test_abort_waiting_and_abort_all() -> None:
    sched = BatchScheduler(max_num_seqs=1, max_batch_tokens=8, max_model_len=64)
    sched.add(spec("a", [1]))
    sched.add(spec("b", [2]))
    sched.add(spec("c", [3]))
    sched.schedule()
    assert sched.abort("b")
    assert sched.abort_all() == ["a", "c"]
    assert not sched.has_unfinished
    assert sched.schedule().released_seq_ids == (0,)


@pytest.mark.parametrize(
    ("prompt", "max_tokens", "message"),
    [([], 4, "at least one token"), ([1] * 8, 4, "context holds 8"), ([1], 0, "max_tokens")],
)
def test_add_rejects_what_cannot_run(prompt: list[int], max_tokens: int, message: str) -> None:
    sched = BatchScheduler(max_num_seqs=1, max_batch_tokens=8, max_model_len=8)
    with pytest.raises(ValueError, match=message):
        sched.add(spec("a", prompt, max_tokens))


def test_batch_budget_must_fit_one_token_per_sequence() -> None:
    with pytest.raises(ValueError, match="max_batch_tokens"):
        BatchScheduler(max_num_seqs=8, max_batch_tokens=4, max_model_len=64)
