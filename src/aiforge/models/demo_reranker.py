"""``demo-reranker``: a tiny Qwen3-Reranker-shaped model with random weights, built here.

A Qwen3-Reranker is a causal LM that scores a (query, document) pair by its "yes" logit
against its "no" logit after the model card's prompt (:mod:`aiforge.models.reranker`). This
demo is a ``Qwen3ForCausalLM`` with random weights and the demo tokenizer
(:mod:`aiforge.models.demo_tokenizer`), taught the two whole words "yes" and "no" as single
tokens (the demo tokenizer's own merges split them), so every code path of the real
reranker runs offline. Its scores are random, and it says so: ``aiforge_demo`` in its
``config.json`` and a model card. ``is_original_qwen3_reranker`` in the same file marks it a
reranker (:func:`aiforge.models.reranker.is_reranker_model`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from aiforge.config import Settings
from aiforge.models.demo import DEMO_CONFIG_FLAG, DEMO_SHAPE
from aiforge.models.demo_build import build_once, special_token_ids
from aiforge.models.demo_tokenizer import build_demo_tokenizer
from aiforge.models.random_weights import write_random_qwen3
from aiforge.models.reranker import CLASSIFIER_TOKENS

DEMO_RERANKER_NAME = "demo-reranker"
DEMO_RERANKER_VERSION = 1
"""Bump when the model's tokenizer or shape changes: a new one is built."""

_MODEL_CARD = """\
# aiforge demo reranker (random weights)

A tiny Qwen3-Reranker-shaped model (a `Qwen3ForCausalLM` scored on its "yes" vs "no"
logits after the Qwen3-Reranker prompt) with **random weights** and aiforge's small demo
tokenizer, built on this machine without any network access.

Its relevance scores are **random**: it exists so that `/v1/rerank` and `/v1/score` can be
tried offline. For real rankings serve e.g. `--model Qwen/Qwen3-Reranker-0.6B`.
"""


def demo_reranker_dir(settings: Settings) -> Path:
    """Where the model lives once built (nothing is created)."""
    return settings.models_dir / f"aiforge-demo-reranker-v{DEMO_RERANKER_VERSION}"


def ensure_demo_reranker(settings: Settings) -> Path:
    """The model's directory, built first if it is not there (safe across processes)."""
    return build_once(demo_reranker_dir(settings), _build)


def _build(out_dir: Path) -> None:
    tokenizer_dir = out_dir / ".tokenizer"
    build_demo_tokenizer(tokenizer_dir)
    vocab_size = add_whole_words(tokenizer_dir / "tokenizer.json", CLASSIFIER_TOKENS)
    ids = special_token_ids(tokenizer_dir)
    write_random_qwen3(
        out_dir,
        tokenizer_dir=tokenizer_dir,
        shape=DEMO_SHAPE,
        dtype="float32",
        vocab_size=vocab_size,
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        is_original_qwen3_reranker=True,
        classifier_from_token=list(CLASSIFIER_TOKENS),
        **{DEMO_CONFIG_FLAG: True},
    )
    shutil.rmtree(tokenizer_dir)
    (out_dir / "README.md").write_text(_MODEL_CARD)


def add_whole_words(tokenizer_json: Path, words: tuple[str, ...]) -> int:
    """Give each of ``words`` (ASCII, no spaces) one token in the byte-level BPE tokenizer
    saved at ``tokenizer_json`` (with its ``tokenizer_config.json`` beside it), by appending
    the merges that join its current pieces left to right. Returns the vocabulary size after
    (added tokens included).

    The learnt vocabulary's ids must stay contiguous and below the added tokens', so the new
    tokens take the ids after the learnt ones and the added tokens move up by as many.
    """
    from tokenizers import Tokenizer

    data: dict[str, Any] = json.loads(tokenizer_json.read_text())
    vocab: dict[str, int] = data["model"]["vocab"]
    merges: list[Any] = data["model"]["merges"]
    as_strings = bool(merges) and isinstance(merges[0], str)
    tokenizer = Tokenizer.from_file(str(tokenizer_json))
    learnt = len(vocab)
    for word in words:
        pieces = tokenizer.encode(word).tokens
        while len(pieces) > 1:
            left, right = pieces[0], pieces[1]
            merges.append(f"{left} {right}" if as_strings else [left, right])
            pieces = [left + right, *pieces[2:]]
            vocab.setdefault(pieces[0], len(vocab))
    shift = len(vocab) - learnt
    for token in data["added_tokens"]:
        token["id"] += shift
    tokenizer_json.write_text(json.dumps(data, ensure_ascii=False))
    _renumber_added_tokens(tokenizer_json.parent / "tokenizer_config.json", data["added_tokens"])
    check = Tokenizer.from_file(str(tokenizer_json))
    for word in words:
        if check.encode(word).tokens != [word]:
            raise RuntimeError(f"the demo tokenizer does not make one token of {word!r}")
    size: int = check.get_vocab_size(with_added_tokens=True)
    return size


def _renumber_added_tokens(config_path: Path, added: list[dict[str, Any]]) -> None:
    """``added_tokens_decoder`` of ``tokenizer_config.json`` keyed by the added tokens' ids."""
    config = json.loads(config_path.read_text())
    by_content = {entry["content"]: entry for entry in config["added_tokens_decoder"].values()}
    config["added_tokens_decoder"] = {str(t["id"]): by_content[t["content"]] for t in added}
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False))
