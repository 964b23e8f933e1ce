"""The GGUF writer, read back with the ``gguf`` package's reader (no llama.cpp needed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFReader, TokenType
from gguf.quants import dequantize

from aiforge.models.random_weights import TINY_QWEN3
from aiforge.testing.gguf import (
    GGUFVocab,
    Qwen3Hparams,
    qwen3_vocab,
    tensor_shapes,
    write_qwen3_gguf,
)
from aiforge.testing.models import qwen3_tokenizer_dir

VOCAB_SIZE = 151936


def field(reader: GGUFReader, key: str) -> Any:
    return reader.fields[key].contents()


@pytest.fixture(scope="module")
def tiny_reader(tiny_gguf: Path) -> GGUFReader:
    return GGUFReader(tiny_gguf)


def test_architecture_and_hparams(tiny_reader: GGUFReader) -> None:
    assert field(tiny_reader, "general.architecture") == "qwen3"
    assert field(tiny_reader, "qwen3.block_count") == 2
    assert field(tiny_reader, "qwen3.embedding_length") == 64
    assert field(tiny_reader, "qwen3.feed_forward_length") == 128
    assert field(tiny_reader, "qwen3.attention.head_count") == 4
    assert field(tiny_reader, "qwen3.attention.head_count_kv") == 2
    assert field(tiny_reader, "qwen3.attention.key_length") == 16
    assert field(tiny_reader, "qwen3.attention.value_length") == 16
    assert field(tiny_reader, "qwen3.context_length") == 4096
    assert field(tiny_reader, "qwen3.rope.freq_base") == pytest.approx(1e6)
    assert field(tiny_reader, "qwen3.attention.layer_norm_rms_epsilon") == pytest.approx(1e-6)


def test_tokenizer_metadata_is_complete(tiny_reader: GGUFReader) -> None:
    assert field(tiny_reader, "tokenizer.ggml.model") == "gpt2"
    assert field(tiny_reader, "tokenizer.ggml.pre") == "qwen2"
    tokens = field(tiny_reader, "tokenizer.ggml.tokens")
    types = field(tiny_reader, "tokenizer.ggml.token_type")
    assert len(tokens) == len(types) == VOCAB_SIZE
    assert tokens[151645] == "<|im_end|>"
    assert types[151645] == TokenType.CONTROL
    assert tokens[151667] == "<think>"
    assert types[151667] == TokenType.USER_DEFINED  # added but not special
    assert tokens[VOCAB_SIZE - 1] == f"[PAD{VOCAB_SIZE - 1}]"
    assert types[VOCAB_SIZE - 1] == TokenType.UNUSED
    assert types[0] == TokenType.NORMAL
    tok_json = json.loads((qwen3_tokenizer_dir() / "tokenizer.json").read_text())
    merges = field(tiny_reader, "tokenizer.ggml.merges")
    assert len(merges) == len(tok_json["model"]["merges"])
    assert merges[0] == " ".join(tok_json["model"]["merges"][0])
    assert field(tiny_reader, "tokenizer.ggml.eos_token_id") == 151645
    assert field(tiny_reader, "tokenizer.ggml.bos_token_id") == 151643
    assert field(tiny_reader, "tokenizer.ggml.padding_token_id") == 151643
    assert field(tiny_reader, "tokenizer.ggml.add_bos_token") is False
    assert "<|im_start|>" in field(tiny_reader, "tokenizer.chat_template")


def test_tensors_follow_llama_cpp_names_and_keep_values(
    tiny_gguf: Path, tiny_reader: GGUFReader
) -> None:
    from safetensors.numpy import load_file

    by_name = {t.name: t for t in tiny_reader.tensors}
    per_block = {
        "attn_norm",
        "attn_q",
        "attn_k",
        "attn_v",
        "attn_output",
        "attn_q_norm",
        "attn_k_norm",
        "ffn_norm",
        "ffn_gate",
        "ffn_up",
        "ffn_down",
    }
    expected = {"token_embd.weight", "output_norm.weight"} | {
        f"blk.{i}.{name}.weight" for i in range(2) for name in per_block
    }
    assert set(by_name) == expected  # tied output head: no output.weight
    hf = load_file(str(tiny_gguf.parent / "hf" / "model.safetensors"))
    q = by_name["blk.1.attn_q.weight"]
    assert list(q.shape) == [64, 64]
    np.testing.assert_array_equal(
        np.asarray(q.data).reshape(64, 64), hf["model.layers.1.self_attn.q_proj.weight"]
    )
    k = by_name["blk.0.attn_k.weight"]
    assert list(k.shape) == [64, 32]  # ggml order: [in, out]
    np.testing.assert_array_equal(
        np.asarray(k.data).reshape(32, 64), hf["model.layers.0.self_attn.k_proj.weight"]
    )
    embd = by_name["token_embd.weight"]
    assert list(embd.shape) == [64, VOCAB_SIZE]


def test_q8_0_quantises_matrices_and_keeps_norms_f32(tmp_path: Path) -> None:
    # A 64-token vocabulary keeps this fast: reading 151,936 tokens back takes minutes.
    shape = {**TINY_QWEN3, "vocab_size": 64}
    vocab = GGUFVocab(
        tokens=[f"t{i}" for i in range(64)], token_types=[1] * 64, merges=["t 1"],
        bos_token_id=0, eos_token_id=1, pad_token_id=0, chat_template=None,
    )  # fmt: skip
    rng = np.random.default_rng(0)
    hparams = Qwen3Hparams.from_config(shape)
    tensors = {
        name: rng.standard_normal(dims).astype(np.float32)
        for name, dims in tensor_shapes(hparams).items()
    }
    path = write_qwen3_gguf(
        tmp_path / "q8.gguf", hparams=hparams, vocab=vocab, tensors=tensors, dtype="q8_0"
    )
    reader = GGUFReader(path)
    by_name = {t.name: t for t in reader.tensors}
    down = by_name["blk.0.ffn_down.weight"]
    assert down.tensor_type == GGMLQuantizationType.Q8_0
    restored = dequantize(down.data, GGMLQuantizationType.Q8_0).reshape(64, 128)
    original = tensors["model.layers.0.mlp.down_proj.weight"]
    np.testing.assert_allclose(restored, original, atol=np.abs(original).max() / 100)
    assert by_name["token_embd.weight"].tensor_type == GGMLQuantizationType.Q8_0
    assert by_name["blk.0.attn_q_norm.weight"].tensor_type == GGMLQuantizationType.F32
    assert field(reader, "general.file_type") == 7  # MOSTLY_Q8_0
    assert not path.with_name("q8.gguf.partial").exists()


def test_vocab_must_fit_the_model() -> None:
    with pytest.raises(ValueError, match="vocab_size"):
        qwen3_vocab(qwen3_tokenizer_dir(), 1000)


def test_hparams_read_transformers_5_nested_rope_theta() -> None:
    config = {
        "vocab_size": 10,
        "hidden_size": 8,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 4,
        "intermediate_size": 16,
        "max_position_embeddings": 64,
        "rms_norm_eps": 1e-5,
        "rope_parameters": {"rope_theta": 5000.0, "rope_type": "default"},
    }
    hp = Qwen3Hparams.from_config(config)
    assert hp.rope_theta == 5000.0
    assert hp.rms_norm_eps == 1e-5
