"""Load a Hugging Face model directory for the transformers engine.

Chat models load with ``AutoModelForCausalLM``; embedding models (the Qwen3-Embedding
layout: a sentence-transformers ``modules.json`` whose pooling is last-token, or a bare
``Qwen3Model`` architecture) with ``AutoModel``. A Qwen3-Reranker is a causal LM too, told
apart by :func:`aiforge.models.reranker.is_reranker_model`; it is scored, never sampled.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from aiforge.engines.core import EngineModelInfo, ImagePreprocessor
from aiforge.engines.transformers.scoring import classifier_token_ids
from aiforge.engines.transformers.vision import QwenVLImages, is_vision_config
from aiforge.models.reranker import is_reranker_model

__all__ = [
    "LoadedModel",
    "configure_threads",
    "is_embedding_model",
    "load_model",
    "resolve_dtype",
]

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}
_EMBEDDING_ARCHITECTURES = {"Qwen3Model", "Qwen2Model", "LlamaModel"}


@dataclass(frozen=True, slots=True)
class LoadedModel:
    model: Any
    """The ``torch.nn.Module`` (an HF ``PreTrainedModel``), in eval mode."""
    tokenizer: Any
    """The model's ``PreTrainedTokenizerBase``."""
    info: EngineModelInfo
    dtype: torch.dtype
    images: ImagePreprocessor | None = None
    """A vision-language model's image preprocessor; None for text-only models."""


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def is_embedding_model(model_dir: Path) -> bool:
    """Whether ``model_dir`` holds an embedding model that pools the last token."""
    pooling = _read_json(model_dir / "1_Pooling" / "config.json")
    if isinstance(pooling, dict) and pooling.get("pooling_mode_lasttoken"):
        return True
    config = _read_json(model_dir / "config.json") or {}
    architectures = config.get("architectures") or []
    return bool(architectures) and all(a in _EMBEDDING_ARCHITECTURES for a in architectures)


def resolve_dtype(requested: str, checkpoint_dtype: str | None, device: str = "cpu") -> torch.dtype:
    """The dtype to run in. ``auto`` keeps a float32 checkpoint in float32 and otherwise uses
    bfloat16 on CPU (about twice float32's speed here; float16 is slow on CPUs)."""
    if requested != "auto":
        if requested not in _DTYPES:
            raise ValueError(f"unknown dtype {requested!r}; use auto, {', '.join(_DTYPES)}")
        return _DTYPES[requested]
    if checkpoint_dtype == "float32":
        return torch.float32
    if device != "cpu" and checkpoint_dtype in _DTYPES:
        return _DTYPES[checkpoint_dtype]
    return torch.bfloat16


def _eos_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config):
        value = getattr(source, "eos_token_id", None) if source is not None else None
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(int(v) for v in value)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return frozenset(ids)


def configure_threads(threads: int | None) -> None:
    """Intra-op threads: ``threads``, else torch's default (one per physical core). One
    inter-op thread: the engine runs one forward at a time, so a second pool would only
    compete with the intra-op one for the same cores."""
    if threads:
        torch.set_num_threads(threads)
    # Settable only before torch's first parallel work in this process; a host process
    # that already ran some (tests, an embedding caller) keeps what it has.
    with contextlib.suppress(RuntimeError):
        if torch.get_num_interop_threads() != 1:
            torch.set_num_interop_threads(1)


def load_model(
    model_dir: Path,
    *,
    dtype: str = "auto",
    max_model_len: int | None = None,
    embedding: bool | None = None,
    threads: int | None = None,
    reranker: bool | None = None,
) -> LoadedModel:
    """Load ``model_dir`` on the CPU. ``embedding=None`` detects the kind from the directory;
    a Qwen-VL-shaped model loads with its image preprocessor."""
    from transformers import (
        AutoConfig,
        AutoModel,
        AutoModelForCausalLM,
        AutoModelForImageTextToText,
        AutoTokenizer,
    )

    configure_threads(threads)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(
            f"{model_dir} is not a Hugging Face model directory (no config.json)"
        )
    is_embedding = is_embedding_model(model_dir) if embedding is None else embedding
    # A reranker is detected like an embedding model (``reranker=None``) and scored only.
    is_reranker = not is_embedding and (
        is_reranker_model(model_dir) if reranker is None else reranker
    )
    config = AutoConfig.from_pretrained(model_dir)
    checkpoint_dtype = getattr(config, "dtype", None)
    checkpoint_name = str(checkpoint_dtype).removeprefix("torch.") if checkpoint_dtype else None
    torch_dtype = resolve_dtype(dtype, checkpoint_name)
    vision = not is_embedding and is_vision_config(config)
    factory = (
        AutoModel
        if is_embedding
        else AutoModelForImageTextToText
        if vision
        else AutoModelForCausalLM
    )
    model = factory.from_pretrained(model_dir, dtype=torch_dtype, attn_implementation="sdpa")
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    images = QwenVLImages.from_pretrained(model_dir, config.image_token_id) if vision else None
    config = config.get_text_config()  # a VL model's sizes are its text decoder's
    limit = int(getattr(config, "max_position_embeddings", 0) or 0) or 32768
    if max_model_len is not None:
        if max_model_len > limit:
            raise ValueError(f"max_model_len {max_model_len} exceeds the model's {limit}")
        limit = max_model_len
    info = EngineModelInfo(
        max_model_len=limit,
        vocab_size=int(config.vocab_size),
        eos_token_ids=_eos_ids(model, tokenizer),
        is_embedding=is_embedding,
        embedding_dim=int(config.hidden_size) if is_embedding else None,
        classifier_token_ids=classifier_token_ids(tokenizer) if is_reranker else None,
    )
    return LoadedModel(model, tokenizer, info, torch_dtype, images)
