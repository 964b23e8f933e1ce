"""Scoring with a yes/no reranker (Qwen3-Reranker) on plain transformers.

A reranker is a causal LM; a pair's relevance is the softmax of its "yes" logit against
its "no" logit after the templated prompt (:mod:`aiforge.models.reranker`). Only those two
rows of the LM head are ever needed, so a batch runs the decoder alone, takes each row's
last real hidden state and multiplies it by the two rows: a 2-wide head instead of the
vocabulary-wide one.
"""

from __future__ import annotations

from typing import Any

import torch

from aiforge.models.reranker import CLASSIFIER_TOKENS

__all__ = ["classifier_token_ids", "relevance_batch"]


def classifier_token_ids(tokenizer: Any) -> tuple[int, int]:
    """The ids of the "no" and "yes" tokens; ``ValueError`` when either is not one token
    of the vocabulary (then the model cannot be scored as the card says)."""
    ids = []
    for word in CLASSIFIER_TOKENS:
        token_id = tokenizer.convert_tokens_to_ids(word)
        if not isinstance(token_id, int) or token_id == tokenizer.unk_token_id:
            raise ValueError(f"the reranker's tokenizer has no single token {word!r}")
        ids.append(token_id)
    return ids[0], ids[1]


def relevance_batch(model: Any, batch: list[list[int]], token_ids: tuple[int, int]) -> list[float]:
    """``softmax(logit_no, logit_yes)[yes]`` after each prompt of ``batch`` (call under
    ``torch.inference_mode``). Right padding: under a causal mask no real token sees a pad,
    so each row's last real hidden state equals the one it gets alone."""
    width = max(len(ids) for ids in batch)
    input_ids = torch.zeros((len(batch), width), dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, ids in enumerate(batch):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        mask[i, : len(ids)] = 1
    hidden = model.base_model(input_ids=input_ids, attention_mask=mask).last_hidden_state
    last = torch.tensor([len(ids) - 1 for ids in batch])
    pooled = hidden[torch.arange(len(batch)), last]
    head = model.get_output_embeddings().weight[list(token_ids)]
    logits = (pooled @ head.T).to(torch.float32)
    relevance: list[float] = torch.softmax(logits, dim=-1)[:, 1].tolist()
    return relevance
