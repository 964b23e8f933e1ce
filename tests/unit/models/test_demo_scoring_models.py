"""``demo-embedding`` and ``demo-reranker``: built offline, resolved like ``demo``, and the
Qwen3-Reranker conventions they follow (prompt, score template, detection)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from aiforge.config import Settings
from aiforge.models.demo import DEMO_CONFIG_FLAG, is_demo_model
from aiforge.models.demo_embedding import ensure_demo_embedding
from aiforge.models.demo_reranker import add_whole_words, ensure_demo_reranker
from aiforge.models.demo_tokenizer import build_demo_tokenizer
from aiforge.models.demos import DEMO_MODELS
from aiforge.models.reranker import (
    DEFAULT_INSTRUCTION,
    PROMPT_PREFIX,
    PROMPT_SUFFIX,
    VLLM_SCORE_TEMPLATE,
    is_reranker_model,
    pair_text,
)
from aiforge.models.sources import resolve_model
from aiforge.testing.models import qwen3_tokenizer_dir, tiny_qwen3


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(cache_dir=tmp_path_factory.mktemp("cache"))


def test_both_demos_are_registered_beside_demo() -> None:
    assert {"demo", "demo-embedding", "demo-reranker"} <= DEMO_MODELS.keys()


def test_demo_reranker_resolves_as_a_reranker_with_yes_and_no_tokens(settings: Settings) -> None:
    resolved = resolve_model("demo-reranker", settings)
    assert resolved.is_reranker
    assert resolved.is_demo
    assert not resolved.is_embedding
    assert resolved.served_name == "demo-reranker"
    config = json.loads((resolved.path / "config.json").read_text())
    assert config["architectures"] == ["Qwen3ForCausalLM"]
    assert config[DEMO_CONFIG_FLAG] is True
    tokenizer = AutoTokenizer.from_pretrained(resolved.path)
    ids = [tokenizer.convert_tokens_to_ids(w) for w in ("no", "yes")]
    assert all(isinstance(i, int) and i < config["vocab_size"] for i in ids)
    assert tokenizer.tokenize("yes") == ["yes"]
    assert ensure_demo_reranker(settings) == resolved.path  # built once


def test_demo_embedding_resolves_as_a_last_token_embedding_model(settings: Settings) -> None:
    resolved = resolve_model("demo-embedding", settings)
    assert resolved.is_embedding
    assert not resolved.is_reranker
    assert is_demo_model(resolved.path)
    pooling = json.loads((resolved.path / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_lasttoken"] is True
    assert ensure_demo_embedding(settings) == resolved.path


def test_whole_words_become_single_tokens_and_other_text_still_encodes(tmp_path: Path) -> None:
    from tokenizers import Tokenizer

    build_demo_tokenizer(tmp_path)
    before = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert len(before.encode("yes").tokens) > 1
    size = add_whole_words(tmp_path / "tokenizer.json", ("no", "yes"))
    after = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert after.encode("yes").tokens == ["yes"]
    assert after.encode("no").tokens == ["no"]
    assert size == after.get_vocab_size(with_added_tokens=True)
    text = "Does the eyes know? <|im_start|>yes"
    assert after.decode(after.encode(text).ids, skip_special_tokens=False) == text


def test_reranker_detection(tmp_path: Path) -> None:
    chat = tiny_qwen3(tmp_path / "plain")
    assert not is_reranker_model(chat)
    named = tiny_qwen3(tmp_path / "Qwen3-Reranker-0.6B")
    assert is_reranker_model(named)
    hub_cache = tmp_path / "models--Qwen--Qwen3-Reranker-4B" / "snapshots" / "abc"
    hub_cache.parent.mkdir(parents=True)
    named.rename(hub_cache)
    assert is_reranker_model(hub_cache)
    assert not is_reranker_model(tmp_path / "missing")


@pytest.mark.parametrize("instruction", [None, "Find code that sorts a list"])
def test_vllm_score_template_writes_the_model_card_prompt(instruction: str | None) -> None:
    """vLLM renders a pair through ``--chat-template`` as messages with roles ``query`` and
    ``document``; the text must be exactly what aiforge's own engine scores."""
    tokenizer = AutoTokenizer.from_pretrained(qwen3_tokenizer_dir())
    messages = [{"role": "query", "content": "Who?"}, {"role": "document", "content": "Me.\n"}]
    kwargs: dict[str, Any] = {} if instruction is None else {"instruction": instruction}
    rendered = tokenizer.apply_chat_template(
        messages, chat_template=VLLM_SCORE_TEMPLATE, tokenize=False, **kwargs
    )
    expected = PROMPT_PREFIX + pair_text("Who?", "Me.\n", instruction) + PROMPT_SUFFIX
    assert rendered == expected
    assert (instruction or DEFAULT_INSTRUCTION) in rendered
    assert rendered.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
