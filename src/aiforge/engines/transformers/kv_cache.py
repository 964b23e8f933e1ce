"""A slot-based KV cache that Hugging Face decoder models write through ``cache.update``.

Each layer owns one key and one value tensor shaped ``[slots, kv_heads, capacity, head_dim]``;
a running sequence owns one slot (row). HF attention modules call
``cache.update(key_states, value_states, layer_idx, ...)`` with the new tokens' keys and
values and attend over what it returns, so the cache only has to know, for the forward pass
about to run, *where* the new tokens go and *which* rows and positions to hand back. The
runner states that with :meth:`SlotKVCache.plan_prefill` or :meth:`SlotKVCache.plan_decode`
before each forward, and builds the matching attention mask itself.

Capacity grows by doubling (up to ``max_len``) so a replica with a 40k context does not
reserve 40k positions per slot up front.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["SlotKVCache"]


@dataclass(frozen=True, slots=True)
class _Plan:
    rows: slice | torch.Tensor
    """A slice when the rows are contiguous (a view, no copy), else an index tensor."""
    write_positions: tuple[tuple[int, int], ...] | torch.Tensor
    """Prefill: ``(start, length)`` per row (the batch's right padding is not stored).
    Decode: one position per row."""
    read_len: int
    slots: tuple[int, ...]


def _rows(slots: Sequence[int]) -> slice | torch.Tensor:
    n = len(slots)
    if list(slots) == list(range(slots[0], slots[0] + n)):
        return slice(slots[0], slots[0] + n)
    return torch.tensor(slots, dtype=torch.long)


class SlotKVCache:
    """Keys and values of up to ``num_slots`` sequences, one row per sequence."""

    def __init__(
        self,
        *,
        num_layers: int,
        num_slots: int,
        num_kv_heads: int,
        head_dim: int,
        max_len: int,
        dtype: torch.dtype,
        initial_capacity: int = 256,
    ) -> None:
        self.num_slots = num_slots
        self.max_len = max_len
        self.capacity = min(initial_capacity, max_len)
        shape = (num_slots, num_kv_heads, self.capacity, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype) for _ in range(num_layers)]
        self.values = [torch.zeros(shape, dtype=dtype) for _ in range(num_layers)]
        self._plan: _Plan | None = None

    # -- memory ----------------------------------------------------------------
    def ensure_capacity(self, length: int) -> None:
        """Make room for positions ``[0, length)`` in every slot (doubling; keeps contents)."""
        if length <= self.capacity:
            return
        if length > self.max_len:
            raise ValueError(f"{length} positions exceed the cache's maximum of {self.max_len}")
        new_capacity = self.capacity
        while new_capacity < length:
            new_capacity *= 2
        new_capacity = min(new_capacity, self.max_len)
        for tensors in (self.keys, self.values):
            for i, old in enumerate(tensors):
                grown = old.new_zeros((*old.shape[:2], new_capacity, old.shape[3]))
                grown[:, :, : self.capacity] = old
                tensors[i] = grown
        self.capacity = new_capacity

    def move(self, src: int, dst: int, length: int) -> None:
        """Copy the first ``length`` positions of slot ``src`` into slot ``dst``."""
        for tensors in (self.keys, self.values):
            for t in tensors:
                t[dst, :, :length] = t[src, :, :length]

    # -- the next forward pass --------------------------------------------------------
    def plan_prefill(
        self, slots: Sequence[int], starts: Sequence[int], lengths: Sequence[int]
    ) -> None:
        """The next forward writes, for each row ``i``, ``lengths[i]`` tokens of ``slots[i]``
        from position ``starts[i]``; the batch is right-padded to the longest, and the
        padding's keys and values are dropped (so they never overwrite a real position)."""
        spans = tuple(zip(starts, lengths, strict=True))
        read_len = max(start + length for start, length in spans)
        self._plan = _Plan(_rows(slots), spans, read_len, tuple(slots))

    def plan_decode(self, slots: Sequence[int], positions: torch.Tensor) -> None:
        """The next forward writes one token per slot, at ``positions`` (``[len(slots)]``)."""
        self._plan = _Plan(_rows(slots), positions, int(positions.max()) + 1, tuple(slots))

    def update(
        self,
        key_states: torch.Tensor,
        value_states: torch.Tensor,
        layer_idx: int,
        *args: Any,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new ``[batch, kv_heads, q_len, head_dim]`` states; return what to attend.

        Called by every attention layer of an HF model during a planned forward pass.
        """
        plan = self._plan
        if plan is None:
            raise RuntimeError("SlotKVCache.update called without a plan for this forward")
        return (
            self._write_read(self.keys[layer_idx], key_states, plan),
            self._write_read(self.values[layer_idx], value_states, plan),
        )

    @staticmethod
    def _write_read(store: torch.Tensor, new: torch.Tensor, plan: _Plan) -> torch.Tensor:
        rows = plan.rows
        if isinstance(plan.write_positions, tuple):
            # Prefill: a handful of rows, each one contiguous copy per layer.
            for i, (slot, (start, length)) in enumerate(
                zip(plan.slots, plan.write_positions, strict=True)
            ):
                store[slot, :, start : start + length] = new[i, :, :length]
        elif isinstance(rows, slice):
            view = store[rows]
            view[torch.arange(view.shape[0]), :, plan.write_positions] = new[:, :, 0]
        else:
            store[rows, :, plan.write_positions] = new[:, :, 0]
        if isinstance(rows, slice):
            return store[rows, :, : plan.read_len]
        # Slice first so the gather copies ``read_len`` positions, not the whole capacity.
        return store[:, :, : plan.read_len].index_select(0, rows)

    # -- what HF's Cache interface asks of a cache that is handed position ids ----------
    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0 if self._plan is None else self._plan.read_len

    @property
    def is_compileable(self) -> bool:
        return False
