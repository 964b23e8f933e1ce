import pytest
from routing_workload import WorkloadSpec, build_workload, chat_messages
from tokenizers import Tokenizer

from aiforge.testing.models import qwen3_tokenizer_dir


class WordTokenizer:
    """One token per whitespace-separated word."""

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self._words: list[str] = []

    def encode(self, text: str) -> list[int]:
        for word in text.split():
            if word not in self._ids:
                self._ids[word] = len(self._words)
                self._words.append(word)
        return [self._ids[word] for word in text.split()]

    def decode(self, ids: list[int]) -> str:
        return " ".join(self._words[i] for i in ids)


class QwenTokenizer:
    def __init__(self) -> None:
        self._tokenizer = Tokenizer.from_file(str(qwen3_tokenizer_dir() / "tokenizer.json"))

    def encode(self, text: str) -> list[int]:
        return list(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: list[int]) -> str:
        return str(self._tokenizer.decode(ids))


SPEC = WorkloadSpec(
    conversations=5, turns=3, system_prompts=2, system_tokens=300,
    user_tokens_min=20, user_tokens_max=40, max_tokens=8, seed=7,
)  # fmt: skip


def test_same_spec_same_workload_and_the_seed_changes_it() -> None:
    tokenizer = WordTokenizer()
    assert build_workload(SPEC, tokenizer) == build_workload(SPEC, tokenizer)
    other = WorkloadSpec(**{**_fields(SPEC), "seed": 8})
    assert (
        build_workload(other, tokenizer).system_prompts
        != build_workload(SPEC, tokenizer).system_prompts
    )


def test_shape_follows_the_spec() -> None:
    workload = build_workload(SPEC, WordTokenizer())
    assert len(workload.system_prompts) == 2
    assert [c.id for c in workload.conversations] == [0, 1, 2, 3, 4]
    assert [c.system for c in workload.conversations] == [0, 1, 0, 1, 0]
    assert all(len(c.user_turns) == 3 for c in workload.conversations)
    assert SPEC.requests == 15


def test_token_counts_with_the_real_tokenizer() -> None:
    tokenizer = QwenTokenizer()
    workload = build_workload(SPEC, tokenizer)
    for text in workload.system_prompts:
        assert 290 <= len(tokenizer.encode(text)) <= 302
    user = [len(tokenizer.encode(t)) for c in workload.conversations for t in c.user_turns]
    assert min(user) >= 18
    assert max(user) <= 42
    counts = workload.prompt_tokens(tokenizer)
    assert counts["user"] == sum(user)


def test_system_prompts_differ_from_their_first_characters() -> None:
    workload = build_workload(WorkloadSpec(system_prompts=8, system_tokens=50), WordTokenizer())
    openings = {text[:32] for text in workload.system_prompts}
    assert len(openings) == 8


def test_every_turn_resends_the_history() -> None:
    workload = build_workload(SPEC, WordTokenizer())
    conversation = workload.conversations[1]
    first = chat_messages(workload, conversation, [])
    assert first == [
        {"role": "system", "content": workload.system_prompts[1]},
        {"role": "user", "content": conversation.user_turns[0]},
    ]
    third = chat_messages(workload, conversation, ["a1", "a2"])
    assert [m["role"] for m in third] == ["system", "user", "assistant"] * 1 + [
        "user", "assistant", "user",
    ]  # fmt: skip
    assert third[:2] == first
    assert [m["content"] for m in third[2:]] == [
        "a1", conversation.user_turns[1], "a2", conversation.user_turns[2],
    ]  # fmt: skip
    with pytest.raises(ValueError, match="only 3 turns"):
        chat_messages(workload, conversation, ["a1", "a2", "a3"])


def test_max_prompt_tokens_bounds_the_last_turn() -> None:
    tokenizer = QwenTokenizer()
    workload = build_workload(SPEC, tokenizer)
    answer = "word " * SPEC.max_tokens
    longest = max(
        sum(len(tokenizer.encode(m["content"])) for m in chat_messages(workload, c, [answer] * 2))
        for c in workload.conversations
    )
    assert longest <= SPEC.max_prompt_tokens()


@pytest.mark.parametrize(
    "changes",
    [{"conversations": 0}, {"turns": 0}, {"user_tokens_min": 50, "user_tokens_max": 40}],
)
def test_invalid_specs_are_refused(changes: dict[str, int]) -> None:
    with pytest.raises(ValueError, match=r"must be at least 1|user_tokens_min"):
        WorkloadSpec(**changes)


def _fields(spec: WorkloadSpec) -> dict[str, int]:
    return {name: getattr(spec, name) for name in spec.__slots__}
