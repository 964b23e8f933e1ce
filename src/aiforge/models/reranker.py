"""Qwen3-Reranker's conventions, as data: how a pair is written and which tokens score it.

A Qwen3-Reranker is a plain ``Qwen3ForCausalLM``. Its model card scores a (query, document)
pair by writing it into a fixed chat prompt — a system turn saying the answer can only be
"yes" or "no", a user turn ``<Instruct>: …\\n<Query>: …\\n<Document>: …``, then an assistant
turn that opens an empty think block — and reading the logits of the next token: the
relevance is the softmax of the "yes" logit against the "no" logit. aiforge's transformers
engine does exactly that; vLLM does it once told (:data:`VLLM_HF_OVERRIDES` turn the LM head
into a two-way classifier, :data:`VLLM_SCORE_TEMPLATE` writes the prompt).

Pure: no torch, no tokenizer; safe to import anywhere (the launcher, the model resolver).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = [
    "CLASSIFIER_TOKENS",
    "DEFAULT_INSTRUCTION",
    "PROMPT_PREFIX",
    "PROMPT_SUFFIX",
    "SYSTEM_PROMPT",
    "VLLM_HF_OVERRIDES",
    "VLLM_SCORE_TEMPLATE",
    "is_reranker_model",
    "pair_text",
]

SYSTEM_PROMPT = (
    "Judge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".'
)
DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
"""The model card's instruction when a request brings none."""
PROMPT_PREFIX = f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n"
PROMPT_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
CLASSIFIER_TOKENS = ("no", "yes")
"""The two tokens whose logits score a pair, "no" first (vLLM's ``classifier_from_token``)."""

VLLM_HF_OVERRIDES: dict[str, Any] = {
    "architectures": ["Qwen3ForSequenceClassification"],
    "classifier_from_token": list(CLASSIFIER_TOKENS),
    "is_original_qwen3_reranker": True,
}
"""``--hf-overrides`` that make vLLM serve a Qwen3-Reranker checkpoint as a classifier whose
score is ``softmax(yes, no)[yes]`` (its ``from_2_way_softmax``)."""

# vLLM renders a scored pair as the messages [{"role": "query"}, {"role": "document"}] through
# this template (``--chat-template``); ``instruction`` is a template variable (the request's
# ``instruction`` field). HF-style Jinja drops one trailing newline, hence the literal.
VLLM_SCORE_TEMPLATE = (
    "<|im_start|>system\n" + SYSTEM_PROMPT + "<|im_end|>\n<|im_start|>user\n"
    "<Instruct>: {{ instruction | default('" + DEFAULT_INSTRUCTION + "', true) }}\n"
    "<Query>: {{ (messages | selectattr('role', 'eq', 'query') | first).content }}\n"
    "<Document>: {{ (messages | selectattr('role', 'eq', 'document') | first).content }}"
    "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>{{ '\\n\\n' }}"
)

_NAME_MARK = "reranker"


def pair_text(query: str, document: str, instruction: str | None = None) -> str:
    """The user turn of one scored pair (what goes between :data:`PROMPT_PREFIX` and
    :data:`PROMPT_SUFFIX`)."""
    instruct = instruction or DEFAULT_INSTRUCTION
    return f"<Instruct>: {instruct}\n<Query>: {query}\n<Document>: {document}"


def is_reranker_model(path: Path) -> bool:
    """Whether the model directory ``path`` holds a Qwen3-Reranker-style model: a causal LM
    whose ``config.json`` says so (``is_original_qwen3_reranker``, as vLLM's override and
    aiforge's demo write it), or one whose directory is named like one
    (``Qwen3-Reranker-0.6B``, a hub cache's ``models--Qwen--Qwen3-Reranker-4B/snapshots/…``).

    The checkpoints themselves only say ``Qwen3ForCausalLM``, like any chat model, so the
    name is the one mark a downloaded reranker carries.
    """
    config = _config(path)
    if config is None:
        return False
    if config.get("is_original_qwen3_reranker") is True:
        return True
    architectures = config.get("architectures") or []
    causal = bool(architectures) and all(str(a).endswith("ForCausalLM") for a in architectures)
    return causal and _NAME_MARK in _model_name(path.resolve()).lower()


def _model_name(path: Path) -> str:
    """The model's own name: the directory's, or a hub cache's repository folder for a
    snapshot (``models--Qwen--Qwen3-Reranker-4B/snapshots/<revision>``)."""
    return path.parent.parent.name if path.parent.name == "snapshots" else path.name


def _config(path: Path) -> dict[str, Any] | None:
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None
