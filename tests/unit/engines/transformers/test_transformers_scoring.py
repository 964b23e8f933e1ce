"""The transformers engine scoring a Qwen3-Reranker-shaped model (``demo-reranker``): the
relevance is exactly the model card's ``softmax(no, yes)[yes]`` of the full model's logits
after the prompt, batched or alone."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch

from aiforge.config import Settings
from aiforge.engines.transformers import TransformersTokenEngine
from aiforge.models.demo_reranker import ensure_demo_reranker
from aiforge.models.reranker import PROMPT_PREFIX, PROMPT_SUFFIX, pair_text

DOCUMENTS = ["the weather in Paris", "a JSON object", "numbers like 3.14 and 42" * 5, "x"]


@pytest.fixture(scope="module")
def reranker_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_demo_reranker(Settings(cache_dir=tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="module")
def engine(reranker_dir: Path) -> TransformersTokenEngine:
    return TransformersTokenEngine.from_pretrained(reranker_dir, dtype="float32")


def _prompts(engine: TransformersTokenEngine) -> list[list[int]]:
    tokenizer = engine.tokenizer
    texts = [
        PROMPT_PREFIX + pair_text("What is the weather?", d) + PROMPT_SUFFIX for d in DOCUMENTS
    ]
    return [list(tokenizer.encode(t)) for t in texts]  # type: ignore[attr-defined]


def _model_card_relevance(engine: TransformersTokenEngine, prompt: list[int]) -> float:
    """The model card's computation: the whole LM's logits, last position, yes vs no."""
    loaded = engine._loaded
    no, yes = engine.info.classifier_token_ids or (0, 0)
    with torch.inference_mode():
        logits = loaded.model(input_ids=torch.tensor([prompt])).logits[0, -1]
    pair = torch.log_softmax(torch.stack([logits[no], logits[yes]]), dim=0)
    return float(pair[1].exp())


def test_the_reranker_is_detected_and_does_not_generate(engine: TransformersTokenEngine) -> None:
    info = engine.info
    assert info.is_reranker
    assert not info.generates
    assert not info.is_embedding
    tokenizer = engine.tokenizer
    no, yes = info.classifier_token_ids or (0, 0)
    assert (no, yes) == tuple(tokenizer.convert_tokens_to_ids(w) for w in ("no", "yes"))  # type: ignore[attr-defined]


def test_relevance_is_the_model_cards_yes_vs_no_batched_or_alone(
    engine: TransformersTokenEngine,
) -> None:
    prompts = _prompts(engine)
    batched = asyncio.run(engine.score(prompts))
    alone = [asyncio.run(engine.score([p]))[0] for p in prompts]
    expected = [_model_card_relevance(engine, p) for p in prompts]
    assert batched == pytest.approx(expected, abs=1e-5)
    assert alone == pytest.approx(expected, abs=1e-5)
    assert all(0.0 < r < 1.0 for r in batched)
    assert len(set(batched)) == len(batched)  # the document changes the score


def test_score_refuses_empty_and_too_long_prompts(engine: TransformersTokenEngine) -> None:
    with pytest.raises(ValueError, match="tokens"):
        asyncio.run(engine.score([[]]))
    with pytest.raises(ValueError, match="tokens"):
        asyncio.run(engine.score([[1] * (engine.info.max_model_len + 1)]))


def test_a_chat_model_does_not_score(tmp_path: Path) -> None:
    from aiforge.testing.models import tiny_qwen3

    chat = TransformersTokenEngine.from_pretrained(tiny_qwen3(tmp_path / "chat"))
    assert chat.info.generates
    with pytest.raises(RuntimeError, match="not a reranker"):
        asyncio.run(chat.score([[1, 2, 3]]))
