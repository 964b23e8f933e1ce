"""Float32 matmuls for bfloat16/float16 weights on CPUs without native 16-bit matmul.

On an AVX2-only CPU (no AVX512-BF16, no AMX) torch's bfloat16 matmul is emulated and
compute-bound at every batch size: about 18 GFLOP/s on two cores, whether it multiplies
one row or 256, while float32 reaches 100+ GFLOP/s from 32 rows up. So a forward pass over
many tokens (a prefill) is several times faster (4-5x for a 128-token prompt of a
Qwen3-0.6B shape) when each linear layer widens its 16-bit weight to float32 on the fly,
multiplies in float32 and rounds the result back; a decode, which reads all the weights
for a few rows, is as fast or faster as it is (widening triples its memory traffic).
Widening is exact, so the two differ only in float32 summation order before the final
rounding, like two bfloat16 kernels for different shapes.

:class:`Float32Linears` is that, as a :class:`~torch.overrides.TorchFunctionMode` around a
forward pass; :func:`upcast_helps` says whether it is worth having on this machine.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

__all__ = ["Float32Linears", "upcast_helps"]

_CHUNK_ELEMENTS = 8 * 1024 * 1024
"""Widen at most this many weight elements at a time (32 MB of float32): an LM head of a
150k vocabulary would otherwise need a transient float32 copy of hundreds of MB."""


def upcast_helps(dtype: torch.dtype, device: str = "cpu") -> bool:
    """Whether ``dtype`` weights on ``device`` compute faster through float32 (see module)."""
    if device != "cpu":
        return False
    if dtype == torch.bfloat16:
        return not torch.ops.mkldnn._is_mkldnn_bf16_supported()
    if dtype == torch.float16:
        return not torch.ops.mkldnn._is_mkldnn_fp16_supported()
    return False


def _linear32(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    x32 = x.to(torch.float32)
    b32 = None if bias is None else bias.to(torch.float32)
    rows = max(1, _CHUNK_ELEMENTS // weight.shape[1])
    if weight.shape[0] <= rows:
        return F.linear(x32, weight.to(torch.float32), b32).to(x.dtype)
    out = torch.empty((*x.shape[:-1], weight.shape[0]), dtype=x.dtype)
    for start in range(0, weight.shape[0], rows):
        end = start + rows
        part_bias = None if b32 is None else b32[start:end]
        out[..., start:end] = F.linear(x32, weight[start:end].to(torch.float32), part_bias)
    return out


class Float32Linears(TorchFunctionMode):
    """Inside this mode, ``F.linear`` with a 16-bit weight multiplies in float32; the
    result keeps the input's dtype. Every other op runs as usual."""

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Sequence[type],
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        if func is F.linear:
            x, weight = args[0], args[1] if len(args) > 1 else kwargs["weight"]
            if weight.dtype in (torch.bfloat16, torch.float16):
                bias = args[2] if len(args) > 2 else kwargs.get("bias")
                return _linear32(x, weight, bias)
        return func(*args, **kwargs)
