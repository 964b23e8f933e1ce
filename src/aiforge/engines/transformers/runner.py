"""The model runner: executes one :class:`SchedulerOutput` on an HF causal LM.

A step is: apply slot moves to the KV cache (compaction, and prefix-cache copies: the
scheduler lists them in the order they must run), one batched forward pass over every prefill
chunk of the step (right-padded, each row at its own positions with its own causal mask
over its own cache row), then one batched forward pass that decodes one token for every
running sequence. The HF model does the maths; :class:`SlotKVCache` decides where its keys
and values live. The LM head runs only on the hidden states that need logits (a prompt's
last position, each decode row): with a 150k vocabulary it is a quarter of a small model.
On a CPU without native 16-bit matmul the decoder multiplies in float32 during prefills
(:mod:`~aiforge.engines.transformers.upcast`: four to five times faster on an AVX2 CPU);
decodes, bound by reading the weights, keep the weights' dtype. A sequence's prefill and
decodes thus run the same kernels whether it runs alone or batched.

Sampling is :mod:`aiforge.engines.sampling`: one batched argmax (or draw) for every row
that needs nothing per request, the per-request path for the rest.

Called only from the engine loop's thread; not thread-safe.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from aiforge.engines.core import GenerationRequest, SamplingParams, TokenConstraint
from aiforge.engines.sampling import (
    SampledToken,
    is_greedy,
    make_generator,
    sample_batch,
    sample_token,
)
from aiforge.engines.transformers.kv_cache import SlotKVCache
from aiforge.engines.transformers.scheduler import DecodeItem, PrefillChunk, SchedulerOutput
from aiforge.engines.transformers.upcast import Float32Linears, upcast_helps
from aiforge.engines.transformers.vision import VisionPrefill

__all__ = ["ModelRunner", "RunnerOutput", "prefill_groups"]


@dataclass(slots=True)
class _SequenceSampling:
    params: SamplingParams
    generator: torch.Generator | None
    constraint: TokenConstraint | None
    generated: list[int] = field(default_factory=list)

    @property
    def batchable(self) -> bool:
        """Nothing per-request to apply: no penalty, mask, logprobs or own generator, so
        the token comes from the batched argmax / draw."""
        p = self.params
        return (
            self.constraint is None
            and p.logprobs is None
            and p.repetition_penalty == 1.0
            and p.frequency_penalty == 0.0
            and p.presence_penalty == 0.0
            and not p.logit_bias
            and (is_greedy(p) or self.generator is None)
        )


@dataclass(frozen=True, slots=True)
class RunnerOutput:
    sampled: dict[str, SampledToken]
    constraint_finished: frozenset[str] = frozenset()
    failed: dict[str, Exception] = field(default_factory=dict)
    """Requests whose own sampling raised (their constraint, their parameters): the loop
    fails them alone; the rest of the batch goes on."""

    def token_ids(self) -> dict[str, int]:
        return {rid: s.token_id for rid, s in self.sampled.items()}


def _kv_shape(config: Any) -> tuple[int, int, int]:
    """(layers, kv heads, head dim) of a decoder config (a VL model's text config)."""
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = int(config.num_attention_heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
    return int(config.num_hidden_layers), kv_heads, head_dim


def _split_head(model: Any) -> tuple[Any, Any] | None:
    """``(decoder, lm_head)`` when the model's logits are exactly ``lm_head(hidden)``.

    Models that scale or soft-cap their logits after the head (Gemma 2, Cohere) get
    ``None``: the runner then asks the whole model for the logits it needs instead.
    """
    config = model.config
    if getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None):
        return None
    decoder = getattr(model, "base_model", None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if decoder is None or decoder is model or head is None:
        return None
    return decoder, head


def prefill_groups(
    chunks: Sequence[PrefillChunk], max_padded_tokens: int
) -> list[list[PrefillChunk]]:
    """Chunks to prefill together, one forward pass per group.

    Every forward is right-padded to its longest chunk; a group grows (longest chunks
    first) only while the padded size ``rows * longest`` stays within
    ``max_padded_tokens``, so a long prompt and many short ones do not turn into many
    long rows of padding. A single chunk always forms a group.
    """
    groups: list[list[PrefillChunk]] = []
    for chunk in sorted(chunks, key=lambda c: len(c.token_ids), reverse=True):
        group = groups[-1] if groups else None
        if group is not None and (len(group) + 1) * len(group[0].token_ids) <= max_padded_tokens:
            group.append(chunk)
        else:
            groups.append([chunk])
    return groups


class ModelRunner:
    """Owns the model's forward passes, the KV cache and each request's sampling state."""

    def __init__(
        self,
        model: Any,
        *,
        max_num_seqs: int,
        max_model_len: int,
        max_prefill_tokens: int = 512,
        upcast_prefill: bool = True,
        vision: VisionPrefill | None = None,
        resident_slots: int = 0,
    ) -> None:
        """``upcast_prefill``: prefill 16-bit weights with float32 matmuls where that is
        faster (:func:`upcast_helps`); ``False`` never does. ``vision``: a vision-language
        model's image inputs (its text decoder then runs under the LM head).
        ``resident_slots``: cache rows beyond ``max_num_seqs`` for the prefix cache's
        resident entries (the scheduler's ``num_slots - max_num_seqs``)."""
        self.model = model
        self.max_prefill_tokens = max_prefill_tokens
        self._vision = vision
        self._split = _split_head(model)
        if vision is not None:
            self._split = (vision.decoder, model.get_output_embeddings())
        layers, kv_heads, head_dim = _kv_shape(model.config)
        dtype = next(model.parameters()).dtype
        self._upcast_prefill = upcast_prefill and upcast_helps(dtype)
        self.cache = SlotKVCache(
            num_layers=layers,
            num_slots=max_num_seqs + resident_slots,
            num_kv_heads=kv_heads,
            head_dim=head_dim,
            max_len=max_model_len,
            dtype=dtype,
        )
        self._sequences: dict[str, _SequenceSampling] = {}

    def add_request(self, request: GenerationRequest) -> None:
        """Register a request's sampling state before the scheduler first schedules it."""
        generator = make_generator(request.params.seed)
        if self._vision is not None:
            self._vision.add(request)
        self._sequences[request.request_id] = _SequenceSampling(
            request.params, generator, request.constraint
        )

    def drop(self, request_ids: tuple[str, ...] | list[str]) -> None:
        for request_id in request_ids:
            self._sequences.pop(request_id, None)
            if self._vision is not None:
                self._vision.drop(request_id)

    @torch.inference_mode()
    def execute(self, step: SchedulerOutput) -> RunnerOutput:
        """Run one step and sample one token per decode and per final prefill chunk."""
        self.drop(step.freed)
        for move in step.moves:
            self.cache.move(move.src, move.dst, move.length)
        request_ids: list[str] = []
        logits: list[torch.Tensor] = []
        for group in prefill_groups(step.prefills, self.max_prefill_tokens):
            last = [c for c in group if c.is_last]
            group_logits = self._prefill(group)
            if last:
                request_ids.extend(c.request_id for c in last)
                logits.append(group_logits)
        if step.decodes:
            request_ids.extend(item.request_id for item in step.decodes)
            logits.append(self._decode(step.decodes))
        if not request_ids:
            return RunnerOutput({})
        return self._sample(request_ids, logits[0] if len(logits) == 1 else torch.cat(logits))

    # -- forward passes --------------------------------------------------------------
    def _forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        mask: Any,
        last: torch.Tensor,
        *,
        prefill: bool,
        vision_inputs: dict[str, Any] | None = None,
    ) -> torch.Tensor:
        """Logits ``[len(last), vocab]``: row ``last[i, 0]``, column ``last[i, 1]`` of the batch.

        ``vision_inputs`` (a VL model's text decoder) replace ``input_ids`` and the positions,
        and the mask is passed as the tensor it is."""
        kwargs: dict[str, Any] = {
            "input_ids": input_ids,
            "position_ids": positions,
            "attention_mask": {"full_attention": mask},
            "cache": self.cache,
            "use_cache": True,
        }
        if vision_inputs is not None:
            del kwargs["input_ids"]
            kwargs.update(vision_inputs, attention_mask=mask)
        upcast = self._upcast_prefill and prefill
        matmuls = Float32Linears() if upcast else contextlib.nullcontext()
        if self._split is None:
            with matmuls:
                full: torch.Tensor = self.model(**kwargs).logits
            return full[last[:, 0], last[:, 1]]
        decoder, head = self._split
        with matmuls:
            hidden = decoder(**kwargs).last_hidden_state
        # The head stays in the weights' dtype: it sees a few rows, like a decode.
        out: torch.Tensor = head(hidden[last[:, 0], last[:, 1]])
        return out

    def _prefill(self, chunks: list[PrefillChunk]) -> torch.Tensor:
        """One forward over ``chunks``; logits at the last token of each final chunk."""
        lengths = [len(c.token_ids) for c in chunks]
        starts = [c.start for c in chunks]
        width = max(lengths)
        self.cache.ensure_capacity(max(s + n for s, n in zip(starts, lengths, strict=True)))
        self.cache.plan_prefill([c.slot for c in chunks], starts, lengths)
        input_ids = torch.zeros((len(chunks), width), dtype=torch.long)
        for i, chunk in enumerate(chunks):
            input_ids[i, : lengths[i]] = torch.tensor(chunk.token_ids)
        start = torch.tensor(starts)[:, None]
        positions = start + torch.arange(width)[None, :]
        mask: torch.Tensor | None = None
        if any(starts) or min(lengths) != width:
            # Row i's query j (absolute position start_i + j) sees its own row's keys up to
            # itself; padding queries see up to the row's last real token (never nothing,
            # which would give NaNs), and nobody sees the padding's dropped keys.
            end = start + torch.tensor(lengths)[:, None] - 1
            limit = torch.minimum(positions, end)
            read_len = int(end.max()) + 1
            mask = (torch.arange(read_len)[None, None, :] <= limit[:, :, None])[:, None]
        last = torch.tensor(
            [[i, lengths[i] - 1] for i, c in enumerate(chunks) if c.is_last], dtype=torch.long
        ).reshape(-1, 2)
        vision_inputs = None
        if self._vision is not None:
            if mask is None:  # the text decoder takes the mask as given: make it explicit
                mask = (positions[:, None, :, None] >= positions[:, None, None, :]).clone()
            ids = [c.request_id for c in chunks]
            vision_inputs = self._vision.prefill_inputs(ids, starts, lengths, input_ids, positions)
        return self._forward(
            input_ids, positions, mask, last, prefill=True, vision_inputs=vision_inputs
        )

    def _decode(self, items: tuple[DecodeItem, ...]) -> torch.Tensor:
        positions = torch.tensor([item.position for item in items], dtype=torch.long)
        read_len = int(positions.max()) + 1
        self.cache.ensure_capacity(read_len)
        self.cache.plan_decode([item.slot for item in items], positions)
        mask = (torch.arange(read_len)[None, :] <= positions[:, None])[:, None, None, :]
        input_ids = torch.tensor([[item.token_id] for item in items], dtype=torch.long)
        last = torch.stack([torch.arange(len(items)), torch.zeros(len(items), dtype=torch.long)], 1)
        vision_inputs = None
        if self._vision is not None:
            ids = [item.request_id for item in items]
            vision_inputs = {
                "input_ids": input_ids,
                "position_ids": self._vision.decode_positions(ids, positions),
            }
        return self._forward(
            input_ids, positions[:, None], mask, last, prefill=False, vision_inputs=vision_inputs
        )

    # -- sampling ----------------------------------------------------------------------
    def _sample(self, request_ids: list[str], logits: torch.Tensor) -> RunnerOutput:
        """One token per row of ``logits`` (``[len(request_ids), vocab]``)."""
        sequences = [self._sequences[rid] for rid in request_ids]
        picked: dict[int, SampledToken] = {}
        batch = [i for i, seq in enumerate(sequences) if seq.batchable]
        if batch:
            rows = logits if len(batch) == len(sequences) else logits[batch]
            params = [sequences[i].params for i in batch]
            for i, token_id in zip(batch, sample_batch(rows, params), strict=True):
                picked[i] = SampledToken(token_id)
        sampled: dict[str, SampledToken] = {}
        finished: set[str] = set()
        failed: dict[str, Exception] = {}
        for i, (request_id, seq) in enumerate(zip(request_ids, sequences, strict=True)):
            try:
                token = picked.get(i)
                if token is None:
                    token = sample_token(
                        logits[i], seq.params, seq.generated, seq.generator, seq.constraint
                    )
                if seq.constraint is not None:
                    seq.constraint.accept(token.token_id)
                    if seq.constraint.is_finished():
                        finished.add(request_id)
            except Exception as exc:  # this request's own sampling: it alone fails
                failed[request_id] = exc
                continue
            seq.generated.append(token.token_id)
            sampled[request_id] = token
        return RunnerOutput(sampled, frozenset(finished), failed)
