"""Build Qwen3-architecture models with random weights from a config.

No weights can be downloaded on development machines, so tests, benchmarks and the offline
demo build models this way: tiny shapes for speed, real shapes (Qwen3-0.6B) for benchmarks,
since a random model of the real shape costs exactly what the real model costs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

TINY_QWEN3: dict[str, Any] = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "intermediate_size": 128,
    "max_position_embeddings": 4096,
}
"""A few-MB Qwen3 for tests: every code path of the real one, milliseconds per token."""

QWEN3_0_6B: dict[str, Any] = {
    "hidden_size": 1024,
    "num_hidden_layers": 28,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "intermediate_size": 3072,
    "max_position_embeddings": 40960,
}
"""The shape of Qwen/Qwen3-0.6B (vocabulary 151,936, tied embeddings, rope theta 1e6)."""

_COMMON: dict[str, Any] = {
    "vocab_size": 151936,
    "tie_word_embeddings": True,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-6,
    "hidden_act": "silu",
    "attention_bias": False,
    "use_sliding_window": False,
}

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
)


def write_random_qwen3(
    out_dir: Path,
    *,
    tokenizer_dir: Path,
    shape: dict[str, Any] | None = None,
    seed: int = 0,
    dtype: str = "bfloat16",
    embedding: bool = False,
    **overrides: Any,
) -> Path:
    """Write a Qwen3 model with random weights and ``tokenizer_dir``'s tokenizer to ``out_dir``.

    ``embedding=True`` writes a Qwen3-Embedding-style model (``Qwen3Model``, last-token
    pooling). Returns ``out_dir``. The result loads with ``AutoModelForCausalLM`` /
    ``AutoModel``, vLLM and aiforge's engines like a downloaded checkpoint.
    """
    import torch
    from transformers import AutoModel, AutoModelForCausalLM, Qwen3Config

    fields: dict[str, Any] = {**_COMMON, **(shape or TINY_QWEN3), **overrides}
    config = Qwen3Config(**fields)
    config.dtype = dtype
    torch.manual_seed(seed)
    factory = AutoModel if embedding else AutoModelForCausalLM
    model = factory.from_config(config, dtype=getattr(torch, dtype))  # type: ignore[no-untyped-call]
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    copy_tokenizer(tokenizer_dir, out_dir)
    if embedding:
        _mark_embedding(out_dir)
    return out_dir


def copy_tokenizer(tokenizer_dir: Path, out_dir: Path) -> None:
    for name in TOKENIZER_FILES:
        src = tokenizer_dir / name
        if src.exists():
            shutil.copy2(src, out_dir / name)


def _mark_embedding(out_dir: Path) -> None:
    """Record the pooling Qwen3-Embedding uses, as sentence-transformers checkpoints do."""
    (out_dir / "1_Pooling").mkdir(exist_ok=True)
    pooling = {"pooling_mode_lasttoken": True, "word_embedding_dimension": None}
    config = json.loads((out_dir / "config.json").read_text())
    pooling["word_embedding_dimension"] = config["hidden_size"]
    (out_dir / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2))
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
        {
            "idx": 2,
            "name": "2",
            "path": "2_Normalize",
            "type": "sentence_transformers.models.Normalize",
        },
    ]
    (out_dir / "modules.json").write_text(json.dumps(modules, indent=2))
