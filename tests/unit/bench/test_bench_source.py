import pytest

from aiforge.bench.source import BenchRequest, ChatSource, RandomSource, source_factory
from aiforge.bench.workload import ChatWorkloadSpec, LengthDistribution, WordTokenizer

FIXED_8 = LengthDistribution.parse("8")
SPEC = ChatWorkloadSpec(
    conversations=1, turns=3, system_prompts=2, system_tokens=20,
    user_tokens_min=5, user_tokens_max=5, max_tokens=8,
)  # fmt: skip


def drain(source: RandomSource | ChatSource) -> list[BenchRequest]:
    taken = []
    while (request := source.next_ready()) is not None:
        taken.append(request)
    return taken


def test_random_source_hands_out_its_limit_then_is_exhausted() -> None:
    lengths = LengthDistribution.parse("random:4-12")
    source = RandomSource(WordTokenizer(), lengths, lengths, seed=5, limit=6)
    requests = drain(source)
    assert [r.index for r in requests] == list(range(6))
    assert source.exhausted
    assert all(4 <= r.max_tokens <= 12 for r in requests)
    assert all(r.messages is not None and r.messages[0]["role"] == "user" for r in requests)
    again = drain(RandomSource(WordTokenizer(), lengths, lengths, seed=5, limit=6))
    assert again == requests


def test_random_source_for_completions_sends_prompts_and_without_limit_never_ends() -> None:
    source = RandomSource(WordTokenizer(), FIXED_8, FIXED_8, as_messages=False)
    requests = [source.next_ready() for _ in range(500)]
    assert all(r is not None and r.prompt and r.kind == "completions" for r in requests)
    assert not source.exhausted


def test_a_chat_turn_is_ready_only_after_its_previous_answer() -> None:
    source = ChatSource(SPEC, WordTokenizer(), FIXED_8, limit=6)  # two conversations
    first = drain(source)
    assert [(r.conversation, r.turn) for r in first] == [(0, 0), (1, 0)]
    assert not source.exhausted  # the second turns wait for answers
    source.complete(first[1], "answer one")
    second = source.next_ready()
    assert second is not None
    assert (second.conversation, second.turn) == (1, 1)
    assert second.messages is not None
    assert [m["role"] for m in second.messages] == ["system", "user", "assistant", "user"]
    assert second.messages[2]["content"] == "answer one"
    assert source.next_ready() is None


def test_chat_turns_queue_in_the_order_their_answers_came() -> None:
    source = ChatSource(SPEC, WordTokenizer(), FIXED_8, limit=6)
    a, b = drain(source)
    source.complete(b, "b0")
    source.complete(a, "a0")
    order = drain(source)
    assert [(r.conversation, r.turn) for r in order] == [(1, 1), (0, 1)]
    for request in order:
        source.complete(request, "x")
    order = drain(source)
    assert [(r.conversation, r.turn) for r in order] == [(1, 2), (0, 2)]
    assert source.exhausted
    assert [r.index for r in order] == [4, 5]


def test_a_chat_limit_cuts_the_last_conversation_short() -> None:
    source = ChatSource(SPEC, WordTokenizer(), FIXED_8, limit=4)
    a, b = drain(source)
    source.complete(a, "")
    source.complete(b, "")
    assert len(drain(source)) == 2
    assert source.exhausted


def test_an_unbounded_chat_starts_a_conversation_when_no_turn_waits() -> None:
    source = ChatSource(SPEC, WordTokenizer(), FIXED_8)
    first = source.next_ready()
    second = source.next_ready()
    assert first is not None
    assert second is not None
    assert (first.conversation, second.conversation) == (0, 1)
    source.complete(first, "a")
    third = source.next_ready()
    assert third is not None
    assert (third.conversation, third.turn) == (0, 1)
    # Conversations share the system prompts round robin.
    assert first.messages is not None
    assert second.messages is not None
    assert first.messages[0] != second.messages[0]
    fourth = drain_one(source)
    assert fourth.messages is not None
    assert fourth.conversation == 2
    assert fourth.messages[0] == first.messages[0]


def drain_one(source: ChatSource) -> BenchRequest:
    request = source.next_ready()
    assert request is not None
    return request


def test_source_factory_gives_fresh_sources_seeded_per_call() -> None:
    make = source_factory("chat", WordTokenizer(), prompt_tokens=FIXED_8,
                          output_tokens=FIXED_8, chat=SPEC)  # fmt: skip
    one, two = make(seed=1, limit=3), make(seed=2, limit=3)
    first, other = one.next_ready(), two.next_ready()
    assert first is not None
    assert other is not None
    assert first.messages != other.messages
    with pytest.raises(ValueError, match="chat endpoint"):
        source_factory("chat", WordTokenizer(), prompt_tokens=FIXED_8, output_tokens=FIXED_8,
                       chat=SPEC, as_messages=False)  # fmt: skip
