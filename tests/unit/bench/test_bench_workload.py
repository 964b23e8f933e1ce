"""The workloads, the chat one shared with ``benchmarks/routing.py``."""

import random
from dataclasses import replace
from pathlib import Path

import pytest

from aiforge.bench.workload import (
    ChatWorkloadSpec,
    HFTokenizer,
    LengthDistribution,
    WordTokenizer,
    build_chat_workload,
    chat_messages,
    load_tokenizer,
    random_prompt,
)
from aiforge.testing.models import qwen3_tokenizer_dir


@pytest.fixture(scope="module")
def qwen() -> HFTokenizer:
    return load_tokenizer(qwen3_tokenizer_dir())


SPEC = ChatWorkloadSpec(
    conversations=5, turns=3, system_prompts=2, system_tokens=300,
    user_tokens_min=20, user_tokens_max=40, max_tokens=8, seed=7,
)  # fmt: skip


def test_same_spec_same_workload_and_the_seed_changes_it() -> None:
    tokenizer = WordTokenizer()
    assert build_chat_workload(SPEC, tokenizer) == build_chat_workload(SPEC, tokenizer)
    other = replace(SPEC, seed=8)
    assert (
        build_chat_workload(other, tokenizer).system_prompts
        != build_chat_workload(SPEC, tokenizer).system_prompts
    )


def test_shape_follows_the_spec() -> None:
    workload = build_chat_workload(SPEC, WordTokenizer())
    assert len(workload.system_prompts) == 2
    assert [c.id for c in workload.conversations] == [0, 1, 2, 3, 4]
    assert [c.system for c in workload.conversations] == [0, 1, 0, 1, 0]
    assert all(len(c.user_turns) == 3 for c in workload.conversations)
    assert SPEC.requests == 15


def test_token_counts_with_the_real_tokenizer(qwen: HFTokenizer) -> None:
    workload = build_chat_workload(SPEC, qwen)
    for text in workload.system_prompts:
        assert 290 <= len(qwen.encode(text)) <= 302
    user = [len(qwen.encode(t)) for c in workload.conversations for t in c.user_turns]
    assert min(user) >= 18
    assert max(user) <= 42
    counts = workload.prompt_tokens(qwen)
    assert counts["user"] == sum(user)


def test_without_a_tokenizer_lengths_are_words() -> None:
    workload = build_chat_workload(SPEC, WordTokenizer())
    assert all(len(text.split()) == 300 for text in workload.system_prompts)
    assert len(random_prompt(3, 57, WordTokenizer(), seed=1).split()) == 57


def test_system_prompts_differ_from_their_first_characters() -> None:
    spec = ChatWorkloadSpec(system_prompts=8, system_tokens=50)
    workload = build_chat_workload(spec, WordTokenizer())
    assert len({text[:32] for text in workload.system_prompts}) == 8


def test_every_turn_resends_the_history() -> None:
    workload = build_chat_workload(SPEC, WordTokenizer())
    conversation = workload.conversations[1]
    system = workload.system_prompts[conversation.system]
    first = chat_messages(system, conversation, [])
    assert first == [
        {"role": "system", "content": workload.system_prompts[1]},
        {"role": "user", "content": conversation.user_turns[0]},
    ]
    third = chat_messages(system, conversation, ["a1", "a2"])
    assert [m["role"] for m in third] == [
        "system", "user", "assistant", "user", "assistant", "user",
    ]  # fmt: skip
    assert third[:2] == first
    assert [m["content"] for m in third[2:]] == [
        "a1", conversation.user_turns[1], "a2", conversation.user_turns[2],
    ]  # fmt: skip
    with pytest.raises(ValueError, match="only 3 turns"):
        chat_messages(system, conversation, ["a1", "a2", "a3"])


def test_max_prompt_tokens_bounds_the_last_turn(qwen: HFTokenizer) -> None:
    workload = build_chat_workload(SPEC, qwen)
    answer = "word " * SPEC.max_tokens
    longest = max(
        sum(
            len(qwen.encode(m["content"]))
            for m in chat_messages(workload.system_prompts[c.system], c, [answer] * 2)
        )
        for c in workload.conversations
    )
    assert longest <= SPEC.max_prompt_tokens()


@pytest.mark.parametrize(
    "changes",
    [{"conversations": 0}, {"turns": 0}, {"user_tokens_min": 50, "user_tokens_max": 40}],
)
def test_invalid_specs_are_refused(changes: dict[str, int]) -> None:
    with pytest.raises(ValueError, match=r"must be at least 1|user_tokens_min"):
        ChatWorkloadSpec(**changes)


# -- lengths and prompts ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("128", LengthDistribution("fixed", 128, 128)),
        ("fixed:7", LengthDistribution("fixed", 7, 7)),
        ("random:10-20", LengthDistribution("random", 10, 20)),
        ("uniform:10,20", LengthDistribution("random", 10, 20)),
        ("normal:100,10", LengthDistribution("normal", 1, 140, 100.0, 10.0)),
    ],
)
def test_length_distributions_parse(text: str, expected: LengthDistribution) -> None:
    assert LengthDistribution.parse(text) == expected


@pytest.mark.parametrize("text", ["", "0", "abc", "random:20-10", "random:0-5", "normal:0,1"])
def test_bad_length_distributions_say_what_is_accepted(text: str) -> None:
    with pytest.raises(ValueError, match="bad length"):
        LengthDistribution.parse(text)


def test_length_samples_stay_in_their_range_with_the_right_mean() -> None:
    rng = random.Random(0)
    uniform = [LengthDistribution.parse("random:10-20").sample(rng) for _ in range(4000)]
    assert min(uniform) == 10
    assert max(uniform) == 20
    assert sum(uniform) / len(uniform) == pytest.approx(15, rel=0.02)
    normal = [LengthDistribution.parse("normal:100,10").sample(rng) for _ in range(4000)]
    assert sum(normal) / len(normal) == pytest.approx(100, rel=0.02)
    assert min(normal) >= 1
    assert max(normal) <= 140
    assert {LengthDistribution.parse("9").sample(rng) for _ in range(10)} == {9}


def test_random_prompts_have_their_length_in_real_tokens_and_differ(qwen: HFTokenizer) -> None:
    prompts = [random_prompt(i, 64, qwen, seed=0) for i in range(4)]
    assert all(62 <= len(qwen.encode(p)) <= 64 for p in prompts)
    assert len({p.split()[1] for p in prompts}) == 4  # "Request N:" leads
    assert random_prompt(2, 64, qwen, seed=0) == prompts[2]


def test_load_tokenizer_takes_a_dir_or_a_file_and_explains_a_miss(tmp_path: Path) -> None:
    assert load_tokenizer(qwen3_tokenizer_dir() / "tokenizer.json").encode("hello")
    with pytest.raises(ValueError, match=r"no tokenizer\.json"):
        load_tokenizer(tmp_path)
    broken = tmp_path / "tokenizer.json"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match="cannot read"):
        load_tokenizer(tmp_path)
