"""Memory estimates against numbers computed by hand."""

from __future__ import annotations

import pytest

from aiforge.models.catalog import Architecture, find
from aiforge.models.memory import (
    GIB,
    RUNTIME_RESERVE_BYTES,
    estimate_memory,
    format_bytes,
    kv_cache_bytes_per_token,
    resident_prefix_sequences,
)


def _arch(name: str) -> Architecture:
    entry = find(name)
    assert entry is not None
    return entry.architecture


def test_qwen3_0_6b_bf16_full_context_by_hand() -> None:
    # KV: 2 × 28 layers × 8 heads × 128 dims × 2 bytes = 114,688 bytes per token.
    assert kv_cache_bytes_per_token(_arch("qwen3-0.6b")) == 114_688
    est = estimate_memory(_arch("qwen3-0.6b"), dtype="bf16", context=32_768)
    assert est.weights == 596_049_920 * 2
    assert est.kv_cache == 114_688 * 32_768 == 3_758_096_384  # 3.5 GiB
    assert est.overhead == RUNTIME_RESERVE_BYTES + 119_209_984
    assert est.total == 1_192_099_840 + 3_758_096_384 + 656_080_896


def test_kv_cache_scales_with_sequences_and_kv_dtype() -> None:
    arch = _arch("qwen3-8b")
    # 2 × 36 × 8 × 128 × 1 byte (fp8) = 73,728 bytes per token.
    assert kv_cache_bytes_per_token(arch, "fp8") == 73_728
    est = estimate_memory(arch, context=4096, sequences=8, kv_dtype="fp8")
    assert est.kv_cache == 73_728 * 4096 * 8


def test_quantized_weights_shrink_by_their_bit_width() -> None:
    arch = _arch("qwen3-32b")
    bf16 = estimate_memory(arch, dtype="bf16", context=1).weights
    assert estimate_memory(arch, dtype="fp8", context=1).weights == pytest.approx(
        bf16 / 2, rel=1e-6
    )
    assert estimate_memory(arch, dtype="int4", context=1).weights == pytest.approx(
        bf16 * 4.25 / 16, rel=1e-6
    )


def test_moe_keeps_every_expert_resident() -> None:
    # 30.5B parameters in bf16 ≈ 56.9 GiB although only 3.3B are active per token.
    est = estimate_memory(_arch("qwen3-30b-a3b"), dtype="bf16", context=1)
    assert est.weights / GIB == pytest.approx(30.532e9 * 2 / GIB, rel=1e-3)
    # 4 KV heads: 2 × 48 × 4 × 128 × 2 = 98,304 bytes per token.
    assert kv_cache_bytes_per_token(_arch("qwen3-30b-a3b")) == 98_304


def test_resident_prefix_cache_sequences_count_on_top_of_the_running_ones() -> None:
    # llama.cpp allocates max_model_len cells per resident sequence at start; transformers
    # keeps one slot-cache row each: 4 resident at 4,096 tokens beside 8 running.
    est = estimate_memory(_arch("qwen3-0.6b"), context=4096, sequences=8, prefix_cache_sequences=4)
    assert est.kv_cache == 114_688 * 4096 * 8
    assert est.prefix_cache == 114_688 * 4096 * 4
    assert est.total == est.weights + est.kv_cache + est.prefix_cache + est.overhead
    assert estimate_memory(_arch("qwen3-0.6b"), context=4096).prefix_cache == 0


@pytest.mark.parametrize(
    ("engine", "prefix_cache", "expected"),
    [("llamacpp", True, 4), ("transformers", True, 4), ("auto", True, 4),
     ("vllm", True, 0), ("llamacpp", False, 0), ("auto", False, 0)],
)  # fmt: skip
def test_which_engines_keep_resident_prefix_sequences(
    engine: str, prefix_cache: bool, expected: int
) -> None:
    assert resident_prefix_sequences(engine, prefix_cache=prefix_cache, sequences=4) == expected


def test_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="positive"):
        estimate_memory(_arch("qwen3-0.6b"), context=0)
    with pytest.raises(ValueError, match="unknown dtype"):
        estimate_memory(_arch("qwen3-0.6b"), context=1, dtype="fp4")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="negative"):
        estimate_memory(_arch("qwen3-0.6b"), context=1, prefix_cache_sequences=-1)


def test_format_bytes() -> None:
    assert format_bytes(3 * GIB // 2) == "1.5 GiB"
    assert format_bytes(512 * 1024**2) == "512 MiB"
