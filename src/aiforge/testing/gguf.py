"""Write Qwen3 GGUF files the way llama.cpp's ``convert_hf_to_gguf.py`` does, for tests.

No weights can be downloaded here, so the llama.cpp engine is tested on GGUF files built
locally: a tiny random Qwen3 (converted from :func:`aiforge.testing.models.tiny_qwen3`, so
llama.cpp and transformers run the *same* weights) and a random model of the Qwen3-0.6B
shape for benchmarks. Each file carries the full tokenizer metadata of the real Qwen3
tokenizer (``gpt2`` BPE, ``qwen2`` pre-tokenizer, merges, token types, special ids, chat
template) with exactly ``vocab_size`` tokens, so llama.cpp tokenizes as Hugging Face does.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aiforge.models.random_weights import QWEN3_0_6B, copy_tokenizer
from aiforge.testing.models import qwen3_tokenizer_dir, tiny_qwen3

GGUF_DTYPES = ("f32", "f16", "q8_0")
"""Weight types this writer produces: ``f32`` for exact comparisons, ``q8_0`` for speed."""

_QWEN3_DEFAULTS: dict[str, Any] = {"vocab_size": 151936, "rope_theta": 1e6, "rms_norm_eps": 1e-6}
"""What every Qwen3 shares, for shape dicts that leave it out."""


@dataclass(frozen=True, slots=True)
class Qwen3Hparams:
    """The architecture numbers a Qwen3 GGUF records (``qwen3.*`` keys)."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    max_position_embeddings: int
    rope_theta: float
    rms_norm_eps: float

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Qwen3Hparams:
        """From a Hugging Face ``config.json`` (or a shape dict plus Qwen3's common fields)."""
        fields = {**_QWEN3_DEFAULTS, **config}
        # transformers 5 nests rope_theta under rope_parameters.
        rope = config.get("rope_parameters") or {}
        if "rope_theta" in rope:
            fields["rope_theta"] = rope["rope_theta"]
        return cls(**{name: fields[name] for name in cls.__dataclass_fields__})


@dataclass(frozen=True, slots=True)
class GGUFVocab:
    """A tokenizer as GGUF stores it: one entry per logits row."""

    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    bos_token_id: int
    eos_token_id: int
    pad_token_id: int
    chat_template: str | None


def qwen3_vocab(tokenizer_dir: Path, vocab_size: int) -> GGUFVocab:
    """The GGUF vocabulary of a Hugging Face Qwen tokenizer, padded to ``vocab_size``.

    Mirrors ``convert_hf_to_gguf.py``: ids the tokenizer lacks become ``[PAD{id}]``
    (UNUSED), special added tokens are CONTROL, other added tokens USER_DEFINED.
    """
    import gguf

    data = json.loads((tokenizer_dir / "tokenizer.json").read_text(encoding="utf-8"))
    config = json.loads((tokenizer_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    by_id: dict[int, tuple[str, int]] = {
        idx: (tok, int(gguf.TokenType.NORMAL)) for tok, idx in data["model"]["vocab"].items()
    }
    for added in data["added_tokens"]:
        special = added["special"]
        added_type = gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED
        by_id[added["id"]] = (added["content"], int(added_type))
    if max(by_id) >= vocab_size:
        raise ValueError(
            f"tokenizer has id {max(by_id)} but the model's vocab_size is {vocab_size}"
        )
    tokens: list[str] = []
    types: list[int] = []
    for idx in range(vocab_size):
        tok, kind = by_id.get(idx, (f"[PAD{idx}]", int(gguf.TokenType.UNUSED)))
        tokens.append(tok)
        types.append(kind)
    ids = {tok: idx for idx, (tok, _) in by_id.items()}
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]]
    eos = ids[config["eos_token"]]
    pad = ids[config.get("pad_token") or "<|endoftext|>"]
    # Qwen has no BOS token; its config.json names <|endoftext|> and the converter records it.
    bos = ids[config["bos_token"]] if config.get("bos_token") else ids["<|endoftext|>"]
    template = config.get("chat_template")
    template_file = tokenizer_dir / "chat_template.jinja"
    if template is None and template_file.exists():
        template = template_file.read_text(encoding="utf-8")
    return GGUFVocab(tokens, types, merges, bos, eos, pad, template)


def _hf_tensor_names(hp: Qwen3Hparams) -> Iterator[tuple[str, str]]:
    """(Hugging Face name, GGUF name) of every Qwen3 tensor; the output head is tied."""
    yield "model.embed_tokens.weight", "token_embd.weight"
    yield "model.norm.weight", "output_norm.weight"
    per_layer = {
        "input_layernorm": "attn_norm",
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "self_attn.q_norm": "attn_q_norm",
        "self_attn.k_norm": "attn_k_norm",
        "post_attention_layernorm": "ffn_norm",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
    }
    for layer in range(hp.num_hidden_layers):
        for hf, gg in per_layer.items():
            yield f"model.layers.{layer}.{hf}.weight", f"blk.{layer}.{gg}.weight"


def tensor_shapes(hp: Qwen3Hparams) -> dict[str, tuple[int, ...]]:
    """Hugging Face (PyTorch ``[out, in]``) shapes of every tensor, by HF name."""
    q, kv = hp.num_attention_heads * hp.head_dim, hp.num_key_value_heads * hp.head_dim
    h, f = hp.hidden_size, hp.intermediate_size
    shapes: dict[str, tuple[int, ...]] = {
        "model.embed_tokens.weight": (hp.vocab_size, h),
        "model.norm.weight": (h,),
    }
    per_layer = {
        "input_layernorm": (h,),
        "self_attn.q_proj": (q, h),
        "self_attn.k_proj": (kv, h),
        "self_attn.v_proj": (kv, h),
        "self_attn.o_proj": (h, q),
        "self_attn.q_norm": (hp.head_dim,),
        "self_attn.k_norm": (hp.head_dim,),
        "post_attention_layernorm": (h,),
        "mlp.gate_proj": (f, h),
        "mlp.up_proj": (f, h),
        "mlp.down_proj": (h, f),
    }
    for layer in range(hp.num_hidden_layers):
        for name, shape in per_layer.items():
            shapes[f"model.layers.{layer}.{name}.weight"] = shape
    return shapes


def write_qwen3_gguf(
    out_path: Path,
    *,
    hparams: Qwen3Hparams,
    vocab: GGUFVocab,
    tensors: Mapping[str, np.ndarray[Any, Any]],
    dtype: str = "f32",
    name: str = "aiforge-random-qwen3",
) -> Path:
    """Write a Qwen3 GGUF from Hugging Face-named tensors (any float dtype).

    Norm weights (1-D) stay F32 as the converter keeps them; matrices become ``dtype``.
    """
    import gguf

    if dtype not in GGUF_DTYPES:
        raise ValueError(f"dtype must be one of {GGUF_DTYPES}, got {dtype!r}")
    file_type = {
        "f32": gguf.LlamaFileType.ALL_F32,
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    }[dtype]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    # Written under a temporary name and renamed: a half-written file is never mistaken
    # for a finished one by callers that reuse existing files.
    partial = out_path.with_name(out_path.name + ".partial")
    writer = gguf.GGUFWriter(partial, "qwen3")
    writer.add_name(name)
    _add_hparams(writer, hparams)
    writer.add_file_type(file_type)
    _add_vocab(writer, vocab)
    for hf_name, gguf_name in _hf_tensor_names(hparams):
        array = np.asarray(tensors[hf_name])
        _add_weight(writer, gguf_name, array, dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    partial.replace(out_path)
    return out_path


def _add_hparams(writer: Any, hp: Qwen3Hparams) -> None:
    writer.add_context_length(hp.max_position_embeddings)
    writer.add_embedding_length(hp.hidden_size)
    writer.add_block_count(hp.num_hidden_layers)
    writer.add_feed_forward_length(hp.intermediate_size)
    writer.add_head_count(hp.num_attention_heads)
    writer.add_head_count_kv(hp.num_key_value_heads)
    writer.add_key_length(hp.head_dim)
    writer.add_value_length(hp.head_dim)
    writer.add_rope_freq_base(hp.rope_theta)
    writer.add_layer_norm_rms_eps(hp.rms_norm_eps)


def _add_vocab(writer: Any, vocab: GGUFVocab) -> None:
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.token_types)
    writer.add_token_merges(vocab.merges)
    writer.add_bos_token_id(vocab.bos_token_id)
    writer.add_eos_token_id(vocab.eos_token_id)
    writer.add_pad_token_id(vocab.pad_token_id)
    writer.add_add_bos_token(False)
    if vocab.chat_template:
        writer.add_chat_template(vocab.chat_template)


def _add_weight(writer: Any, name: str, array: np.ndarray[Any, Any], dtype: str) -> None:
    import gguf

    if array.ndim == 1 or dtype == "f32":
        writer.add_tensor(name, array.astype(np.float32))
    elif dtype == "f16":
        writer.add_tensor(name, array.astype(np.float16))
    else:
        qtype = gguf.GGMLQuantizationType.Q8_0
        writer.add_tensor(
            name, gguf.quants.quantize(array.astype(np.float32), qtype), raw_dtype=qtype
        )


def gguf_from_hf_dir(model_dir: Path, out_path: Path, *, dtype: str = "f32") -> Path:
    """Convert a Hugging Face Qwen3 checkpoint (safetensors) to GGUF at ``out_path``."""
    from safetensors.numpy import load_file

    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    hparams = Qwen3Hparams.from_config(config)
    tensors: dict[str, np.ndarray[Any, Any]] = {}
    for shard in sorted(model_dir.glob("*.safetensors")):
        tensors.update(_load_as_float(shard, load_file))
    vocab = qwen3_vocab(model_dir, hparams.vocab_size)
    return write_qwen3_gguf(out_path, hparams=hparams, vocab=vocab, tensors=tensors, dtype=dtype)


def _load_as_float(shard: Path, load_file: Any) -> dict[str, np.ndarray[Any, Any]]:
    """safetensors' numpy loader cannot read bf16; go through torch for that case."""
    try:
        return dict(load_file(str(shard)))
    except (TypeError, ValueError):
        from safetensors.torch import load_file as load_torch

        return {k: v.float().numpy() for k, v in load_torch(str(shard)).items()}


def tiny_qwen3_gguf(out_dir: Path, *, seed: int = 0, dtype: str = "f32") -> Path:
    """A tiny random Qwen3 as ``out_dir/model.gguf`` with its HF tokenizer files beside it.

    The Hugging Face checkpoint it was converted from stays in ``out_dir/hf`` so tests can
    compare llama.cpp against transformers on identical weights. An existing
    ``out_dir/model.gguf`` is reused, so test modules can share one build per session.
    """
    if (out_dir / "model.gguf").is_file():
        return out_dir / "model.gguf"
    hf_dir = tiny_qwen3(out_dir / "hf", seed=seed)
    copy_tokenizer(qwen3_tokenizer_dir(), out_dir)
    return gguf_from_hf_dir(hf_dir, out_dir / "model.gguf", dtype=dtype)


def random_qwen3_gguf(
    out_path: Path,
    *,
    shape: Mapping[str, Any] = QWEN3_0_6B,
    dtype: str = "q8_0",
    seed: int = 0,
) -> Path:
    """A random-weight Qwen3 GGUF of ``shape`` (default: Qwen3-0.6B) for benchmarks.

    Weights are N(0, 0.02) like Hugging Face's initialiser and norms are ones, so the
    model costs exactly what the real one costs per token. ~650 MB as Q8_0.
    """
    hparams = Qwen3Hparams.from_config(shape)
    rng = np.random.default_rng(seed)
    tensors: dict[str, np.ndarray[Any, Any]] = {}
    for name, dims in tensor_shapes(hparams).items():
        if len(dims) == 1:
            tensors[name] = np.ones(dims, dtype=np.float32)
        else:
            tensors[name] = rng.standard_normal(dims, dtype=np.float32) * np.float32(0.02)
    vocab = qwen3_vocab(qwen3_tokenizer_dir(), hparams.vocab_size)
    return write_qwen3_gguf(out_path, hparams=hparams, vocab=vocab, tensors=tensors, dtype=dtype)


def require_llama_cpp() -> None:
    """Skip the calling test when llama-cpp-python is missing, or fail when the environment
    demands the engine (``AIFORGE_REQUIRE_ENGINES`` contains ``llamacpp``, as in CI)."""
    import os

    import pytest

    try:
        import llama_cpp  # noqa: F401
    except (ImportError, OSError) as exc:
        reason = f"llama-cpp-python is not installed ({exc}); pip install 'aiforge[llamacpp]'"
        if "llamacpp" in os.environ.get("AIFORGE_REQUIRE_ENGINES", ""):
            pytest.fail(f"AIFORGE_REQUIRE_ENGINES includes llamacpp but {reason}")
        pytest.skip(reason)
