"""Float32Linears: 16-bit linears computed in float32, exactly as widening by hand."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from aiforge.engines.transformers import upcast
from aiforge.engines.transformers.upcast import Float32Linears, upcast_helps


def _by_hand(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    bias = None if b is None else b.float()
    return F.linear(x.float(), w.float(), bias).to(x.dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_linears_widen_to_float32_and_keep_the_input_dtype(
    dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    widened: list[torch.Size] = []
    real = upcast._linear32

    def spy(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        widened.append(w.shape)
        return real(x, w, b)

    monkeypatch.setattr(upcast, "_linear32", spy)
    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 48).to(dtype)
    x = torch.randn(3, 5, 64).to(dtype)
    with Float32Linears():
        y = layer(x)
        no_bias = F.linear(x, layer.weight)
        other = torch.relu(x)  # every other op runs as usual
    assert y.dtype == dtype
    assert torch.equal(y, _by_hand(x, layer.weight, layer.bias))
    assert torch.equal(no_bias, _by_hand(x, layer.weight, None))
    assert torch.equal(other, torch.relu(x))
    assert widened == [(48, 64), (48, 64)]
    layer(x)  # outside the mode: not widened
    assert len(widened) == 2


def test_large_weights_are_widened_in_chunks_with_the_same_result(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    torch.manual_seed(1)
    w = torch.randn(100, 32).bfloat16()
    b = torch.randn(100).bfloat16()
    x = torch.randn(4, 32).bfloat16()
    monkeypatch.setattr(upcast, "_CHUNK_ELEMENTS", 32 * 7)  # 7 rows a chunk: 15 chunks
    with Float32Linears():
        y = F.linear(x, w, b)
    assert torch.equal(y, _by_hand(x, w, b))


def test_float32_weights_pass_through_and_only_cpu_16_bit_may_upcast() -> None:
    w = torch.randn(8, 4)
    x = torch.randn(2, 4)
    with Float32Linears():
        assert torch.equal(F.linear(x, w), F.linear(x, w))
    assert not upcast_helps(torch.float32)
    assert not upcast_helps(torch.bfloat16, device="cuda")
    native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert upcast_helps(torch.bfloat16) is (not native)
