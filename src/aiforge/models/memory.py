"""How much accelerator (or CPU) memory a model needs: a pure estimate, no I/O.

    total = weights + KV cache + prefix cache + overhead
    weights  = parameters × bytes per weight (of the weight dtype)
    KV cache = 2 (K and V) × layers × KV heads × head dim × bytes per KV element
               × tokens × sequences
    prefix cache = the same per token × tokens × resident prefix-cache sequences
    overhead = a fixed runtime reserve + a share of the weights (activations, buffers,
               allocator slack)

aiforge's own engines keep up to ``prefix_cache_sequences`` finished sequences' KV
resident for prefix caching, each on top of the running sequences: llama.cpp allocates a
KV stream of ``max_model_len`` cells for each when the replica starts, transformers keeps
one more row of its slot cache (up to the context) for each. vLLM's prefix cache reuses
blocks inside its own KV budget and adds nothing (:func:`resident_prefix_sequences`).

Quantized formats store scales beside the weights, so their bytes per weight are a little
over the nominal bit width (int4 with one fp16 scale and zero per group of 128 weights is
4.25 bits). The KV cache keeps the activation dtype (bf16) unless ``kv_dtype`` says
otherwise, as vLLM does by default even for fp8 or int4 weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from aiforge.models.catalog import Architecture, parameter_count

RESIDENT_KV_ENGINES = frozenset({"transformers", "llamacpp"})
"""Engines whose prefix cache holds finished sequences' KV beside the running ones."""

WeightDtype = Literal["bf16", "fp16", "fp8", "int8", "int4"]
KvDtype = Literal["bf16", "fp16", "fp8"]

WEIGHT_DTYPES: tuple[WeightDtype, ...] = get_args(WeightDtype)

BYTES_PER_WEIGHT: dict[str, float] = {
    "bf16": 2.0,
    "fp16": 2.0,
    "fp8": 1.0,
    "int8": 1.0 + 4 / 128,  # one fp32 scale per group of 128
    "int4": 4.25 / 8,  # 4 bits + fp16 scale and zero per group of 128
}
BYTES_PER_KV: dict[str, int] = {"bf16": 2, "fp16": 2, "fp8": 1}

RUNTIME_RESERVE_BYTES = 512 * 1024**2
"""Fixed reserve for the runtime itself (CUDA context or interpreter, kernels, buffers)."""
WEIGHT_OVERHEAD_FRACTION = 0.10
"""Activations and allocator slack, as a share of the weights."""

GIB = 1024**3


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a model needs for one serving configuration."""

    weights: int
    kv_cache: int
    overhead: int
    prefix_cache: int = 0
    """KV that resident prefix-cache sequences may hold, at most (their bound)."""

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.prefix_cache + self.overhead

    @property
    def total_gib(self) -> float:
        return self.total / GIB


def kv_cache_bytes_per_token(arch: Architecture, kv_dtype: KvDtype = "bf16") -> int:
    """Bytes of K and V one token occupies across all layers."""
    return 2 * arch.layers * arch.kv_heads * arch.head_dim * BYTES_PER_KV[kv_dtype]


def weight_bytes(arch: Architecture, dtype: WeightDtype) -> int:
    """Bytes of the weights stored in ``dtype`` (every expert of an MoE model is resident)."""
    return round(parameter_count(arch).total * BYTES_PER_WEIGHT[dtype])


def resident_prefix_sequences(engine: str, *, prefix_cache: bool, sequences: int) -> int:
    """Finished sequences whose KV ``engine`` may keep resident beside the running ones,
    given the prefix-cache settings (``AIFORGE_PREFIX_CACHE``,
    ``AIFORGE_PREFIX_CACHE_SEQUENCES``): ``sequences`` for aiforge's own engines with the
    cache on (and for ``auto``, which may pick one), 0 for vLLM, whose prefix cache lives
    inside its own KV budget."""
    if not prefix_cache or (engine != "auto" and engine not in RESIDENT_KV_ENGINES):
        return 0
    return sequences


def estimate_memory(
    arch: Architecture,
    *,
    dtype: WeightDtype = "bf16",
    context: int,
    sequences: int = 1,
    kv_dtype: KvDtype = "bf16",
    prefix_cache_sequences: int = 0,
) -> MemoryEstimate:
    """Memory to serve ``sequences`` concurrent requests of ``context`` tokens each, with
    up to ``prefix_cache_sequences`` finished ones kept resident for prefix caching
    (:func:`resident_prefix_sequences`).

    Raises ``ValueError`` for a non-positive context or sequence count, a negative
    prefix-cache bound, or an unknown dtype.
    """
    if context <= 0 or sequences <= 0:
        raise ValueError("context and sequences must be positive")
    if prefix_cache_sequences < 0:
        raise ValueError("prefix_cache_sequences must not be negative")
    if dtype not in BYTES_PER_WEIGHT or kv_dtype not in BYTES_PER_KV:
        raise ValueError(f"unknown dtype {dtype!r} / kv dtype {kv_dtype!r}")
    weights = weight_bytes(arch, dtype)
    per_sequence = kv_cache_bytes_per_token(arch, kv_dtype) * context
    overhead = RUNTIME_RESERVE_BYTES + round(WEIGHT_OVERHEAD_FRACTION * weights)
    return MemoryEstimate(
        weights=weights,
        kv_cache=per_sequence * sequences,
        overhead=overhead,
        prefix_cache=per_sequence * prefix_cache_sequences,
    )


def format_bytes(n: int) -> str:
    """``1.5 GiB``-style rendering for tables and messages."""
    if n >= GIB:
        return f"{n / GIB:.1f} GiB"
    return f"{n / 1024**2:.0f} MiB"
