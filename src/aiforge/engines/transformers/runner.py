"""The model runner: executes one :class:`SchedulerOutput` on an HF causal LM.

A step is: apply slot moves to the KV cache, run each prefill chunk (one sequence per
forward pass; the first chunk uses the plain causal kernel), then one batched forward pass
that decodes one token for every running sequence, each row at its own position with its
own mask over its own cache row. The HF model does the maths; :class:`SlotKVCache` decides
where its keys and values live. Sampling is :mod:`aiforge.engines.sampling`, per request.

Called only from the engine loop's thread; not thread-safe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from aiforge.engines.core import GenerationRequest, SamplingParams, TokenConstraint
from aiforge.engines.sampling import SampledToken, make_generator, sample_token
from aiforge.engines.transformers.kv_cache import SlotKVCache
from aiforge.engines.transformers.scheduler import DecodeItem, PrefillChunk, SchedulerOutput

__all__ = ["ModelRunner", "RunnerOutput"]


@dataclass(slots=True)
class _SequenceSampling:
    params: SamplingParams
    generator: torch.Generator | None
    constraint: TokenConstraint | None
    generated: list[int] = field(default_factory=list)

    @property
    def plain_greedy(self) -> bool:
        """Argmax of the raw logits is the answer: no penalty, mask or logprobs to apply."""
        p = self.params
        return (
            p.temperature <= 0
            and self.constraint is None
            and p.logprobs is None
            and p.repetition_penalty == 1.0
            and p.frequency_penalty == 0.0
            and p.presence_penalty == 0.0
        )


@dataclass(frozen=True, slots=True)
class RunnerOutput:
    sampled: dict[str, SampledToken]
    constraint_finished: frozenset[str] = frozenset()

    def token_ids(self) -> dict[str, int]:
        return {rid: s.token_id for rid, s in self.sampled.items()}


def _kv_shape(config: Any) -> tuple[int, int, int]:
    """(layers, kv heads, head dim) of a decoder config."""
    heads = int(config.num_attention_heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
    return int(config.num_hidden_layers), kv_heads, head_dim


class ModelRunner:
    """Owns the model's forward passes, the KV cache and each request's sampling state."""

    def __init__(self, model: Any, *, max_num_seqs: int, max_model_len: int) -> None:
        self.model = model
        layers, kv_heads, head_dim = _kv_shape(model.config)
        dtype = next(model.parameters()).dtype
        self.cache = SlotKVCache(
            num_layers=layers,
            num_slots=max_num_seqs,
            num_kv_heads=kv_heads,
            head_dim=head_dim,
            max_len=max_model_len,
            dtype=dtype,
        )
        self._sequences: dict[str, _SequenceSampling] = {}

    def add_request(self, request: GenerationRequest) -> None:
        """Register a request's sampling state before the scheduler first schedules it."""
        generator = make_generator(request.params.seed)
        self._sequences[request.request_id] = _SequenceSampling(
            request.params, generator, request.constraint
        )

    def drop(self, request_ids: tuple[str, ...] | list[str]) -> None:
        for request_id in request_ids:
            self._sequences.pop(request_id, None)

    @torch.inference_mode()
    def execute(self, step: SchedulerOutput) -> RunnerOutput:
        """Run one step and sample one token per decode and per final prefill chunk."""
        self.drop(step.freed)
        for move in step.moves:
            self.cache.move(move.src, move.dst, move.length)
        rows: list[tuple[str, torch.Tensor]] = []
        for chunk in step.prefills:
            logits = self._prefill(chunk)
            if chunk.is_last:
                rows.append((chunk.request_id, logits))
        if step.decodes:
            logits = self._decode(step.decodes)
            rows.extend((item.request_id, logits[i]) for i, item in enumerate(step.decodes))
        return self._sample(rows)

    # -- forward passes --------------------------------------------------------------
    def _forward(self, input_ids: torch.Tensor, positions: torch.Tensor, mask: Any) -> Any:
        out = self.model(
            input_ids=input_ids,
            position_ids=positions,
            attention_mask={"full_attention": mask},
            cache=self.cache,
            use_cache=True,
            logits_to_keep=1,
        )
        return out.logits[:, -1, :]

    def _prefill(self, chunk: PrefillChunk) -> torch.Tensor:
        n = len(chunk.token_ids)
        end = chunk.start + n
        self.cache.ensure_capacity(end)
        self.cache.plan_prefill(chunk.slot, chunk.start, n)
        positions = torch.arange(chunk.start, end).unsqueeze(0)
        mask: torch.Tensor | None = None
        if chunk.start > 0:
            # A later chunk attends to the earlier ones too: causal over absolute positions.
            mask = (torch.arange(end)[None, :] <= positions[0][:, None])[None, None]
        input_ids = torch.tensor([chunk.token_ids], dtype=torch.long)
        logits: torch.Tensor = self._forward(input_ids, positions, mask)[0]
        return logits

    def _decode(self, items: tuple[DecodeItem, ...]) -> torch.Tensor:
        positions = torch.tensor([item.position for item in items], dtype=torch.long)
        read_len = int(positions.max()) + 1
        self.cache.ensure_capacity(read_len)
        self.cache.plan_decode([item.slot for item in items], positions)
        mask = (torch.arange(read_len)[None, :] <= positions[:, None])[:, None, None, :]
        input_ids = torch.tensor([[item.token_id] for item in items], dtype=torch.long)
        logits: torch.Tensor = self._forward(input_ids, positions[:, None], mask)
        return logits

    # -- sampling ----------------------------------------------------------------------
    def _sample(self, rows: list[tuple[str, torch.Tensor]]) -> RunnerOutput:
        sampled: dict[str, SampledToken] = {}
        finished: set[str] = set()
        for request_id, logits in rows:
            seq = self._sequences[request_id]
            if seq.plain_greedy:
                token = SampledToken(int(torch.argmax(logits)))
            else:
                token = sample_token(
                    logits, seq.params, seq.generated, seq.generator, seq.constraint
                )
            seq.generated.append(token.token_id)
            if seq.constraint is not None:
                seq.constraint.accept(token.token_id)
                if seq.constraint.is_finished():
                    finished.add(request_id)
            sampled[request_id] = token
        return RunnerOutput(sampled, frozenset(finished))
