"""Pure next-token sampling, shared by aiforge's token engines (transformers, llama.cpp).

One logits row in, one :class:`SampledToken` out. The order of operations is fixed and is
part of the contract, because logprobs are reported from the middle of it:

1. penalties over the request's *generated* tokens (repetition, then frequency and presence,
   with vLLM/OpenAI semantics);
2. the constraint's mask (forbidden tokens become ``-inf``);
3. temperature (skipped for greedy: ``temperature`` below :data:`GREEDY_BELOW`);
4. logprobs: ``log_softmax`` of the row as processed so far (sampled token plus the top-k
   alternatives), so a constrained request never reports a forbidden token as likely;
5. top-k then top-p truncation;
6. the pick: argmax when greedy, else a draw from the request's own ``torch.Generator`` so
   a seeded request samples the same tokens whether it ran alone or batched.

Nothing here touches a model, a thread or the network; every function is deterministic
given its inputs (and the generator's state).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from aiforge.engines.core import SamplingParams, TokenConstraint

__all__ = [
    "GREEDY_BELOW",
    "LOGPROB_FLOOR",
    "SampledToken",
    "apply_logit_bias",
    "apply_penalties",
    "apply_top_k",
    "apply_top_p",
    "is_greedy",
    "make_generator",
    "process_logits",
    "sample_batch",
    "sample_token",
    "top_logprobs",
]

LOGPROB_FLOOR = -9999.0
"""Logprobs of forbidden tokens (``-inf``) are reported as this, as vLLM does: JSON has no -inf."""

GREEDY_BELOW = 1e-5
"""Temperatures under this sample greedily, as vLLM does: dividing logits by a tinier one
overflows to ``inf`` and the draw fails (``temperature: 1e-30`` is a valid request)."""

_SEED_MASK = (1 << 64) - 1


def is_greedy(params: SamplingParams) -> bool:
    return params.temperature < GREEDY_BELOW


@dataclass(frozen=True, slots=True)
class SampledToken:
    """The token picked for one sequence at one step, and its logprobs when asked for."""

    token_id: int
    logprob: float | None = None
    top_logprobs: tuple[tuple[int, float], ...] = ()


def make_generator(seed: int | None) -> torch.Generator | None:
    """A CPU generator seeded with ``seed``; ``None`` (use torch's global RNG) when unseeded.

    Any integer is taken (torch only takes 64 bits): the server refuses seeds outside
    int64, but ``seed + i`` for the ``n`` choices may pass the top, and an engine must not
    fail on a value it can fold.
    """
    if seed is None:
        return None
    generator = torch.Generator(device="cpu")
    generator.manual_seed(seed & _SEED_MASK)
    return generator


def apply_logit_bias(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Add OpenAI's ``logit_bias`` to the row in place (ids beyond the row are ignored)."""
    if params.logit_bias:
        size = logits.shape[-1]
        pairs = [(t, b) for t, b in params.logit_bias if 0 <= t < size]
        if pairs:  # one indexed add, however many entries
            ids = torch.tensor([t for t, _ in pairs], dtype=torch.long)
            biases = torch.tensor([b for _, b in pairs], dtype=logits.dtype)
            logits.index_add_(0, ids, biases)
    return logits


def apply_penalties(
    logits: torch.Tensor, params: SamplingParams, generated: Sequence[int]
) -> torch.Tensor:
    """Repetition, frequency and presence penalties over ``generated``; returns a new row.

    Repetition (> 1 discourages): positive logits are divided by it, negative ones
    multiplied. Frequency subtracts ``penalty * count``; presence subtracts ``penalty`` once.
    """
    needs = (
        params.repetition_penalty != 1.0
        or params.frequency_penalty != 0.0
        or params.presence_penalty != 0.0
    )
    if not generated or not needs:
        return logits
    counts = Counter(generated)
    ids = torch.tensor(list(counts.keys()), dtype=torch.long)
    freq = torch.tensor(list(counts.values()), dtype=logits.dtype)
    out = logits.clone()
    selected = out[ids]
    if params.repetition_penalty != 1.0:
        rp = params.repetition_penalty
        selected = torch.where(selected > 0, selected / rp, selected * rp)
    selected = selected - params.frequency_penalty * freq - params.presence_penalty
    out[ids] = selected
    return out


def apply_top_k(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """Keep the ``top_k`` largest logits (ties at the threshold kept); 0 keeps all."""
    if top_k <= 0 or top_k >= logits.shape[-1]:
        return logits
    threshold = torch.topk(logits, top_k).values[-1]
    return logits.masked_fill(logits < threshold, float("-inf"))


def apply_top_p(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probability mass reaches ``top_p``.

    The most likely token is always kept, so ``top_p`` close to 0 degenerates to greedy.
    """
    if top_p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    mass_before = torch.cumsum(probs, dim=-1) - probs
    drop_sorted = mass_before >= top_p
    drop_sorted[0] = False
    drop = torch.zeros_like(drop_sorted).scatter(0, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def process_logits(
    logits_row: torch.Tensor,
    params: SamplingParams,
    generated: Sequence[int],
    constraint: TokenConstraint | None,
) -> torch.Tensor:
    """Steps 1–3 of the module contract on a float32 copy of ``logits_row`` (1-D)."""
    row = logits_row.detach().to(torch.float32).clone()
    row = apply_logit_bias(row, params)
    row = apply_penalties(row, params, generated)
    if constraint is not None:
        constraint.mask_logits(row)
    if not is_greedy(params):
        row = row / params.temperature
    return row


def top_logprobs(
    logprobs: torch.Tensor, token_id: int, k: int
) -> tuple[float, tuple[tuple[int, float], ...]]:
    """The logprob of ``token_id`` and the ``k`` most likely ``(token, logprob)`` pairs."""
    chosen = max(float(logprobs[token_id]), LOGPROB_FLOOR)
    if k <= 0:
        return chosen, ()
    values, ids = torch.topk(logprobs, min(k, logprobs.shape[-1]))
    top = tuple(
        (int(i), max(float(v), LOGPROB_FLOOR))
        for i, v in zip(ids.tolist(), values.tolist(), strict=True)
    )
    return chosen, top


def sample_token(
    logits_row: torch.Tensor,
    params: SamplingParams,
    generated: Sequence[int],
    generator: torch.Generator | None,
    constraint: TokenConstraint | None = None,
) -> SampledToken:
    """Pick the next token for one sequence (see the module docstring for the order).

    ``logits_row`` is the model's 1-D logits for the sequence's last position; it is not
    modified. ``generated`` holds the tokens the request sampled so far (prompt excluded).
    The constraint's :meth:`~TokenConstraint.accept` is *not* called here: the engine does
    that once it commits the token.
    """
    row = process_logits(logits_row, params, generated, constraint)
    logprobs = torch.log_softmax(row, dim=-1) if params.logprobs is not None else None
    if is_greedy(params):
        token_id = int(torch.argmax(row))
    else:
        row = apply_top_p(apply_top_k(row, params.top_k), params.top_p)
        probs = torch.softmax(row, dim=-1)
        token_id = int(torch.multinomial(probs, 1, generator=generator))
    if logprobs is None or params.logprobs is None:
        return SampledToken(token_id)
    chosen, top = top_logprobs(logprobs, token_id, params.logprobs)
    return SampledToken(token_id, chosen, top)


def _truncate_rows(rows: torch.Tensor, top_ks: list[int], top_ps: list[float]) -> torch.Tensor:
    """:func:`apply_top_k` then :func:`apply_top_p` on each row of ``rows`` at once."""
    vocab = rows.shape[-1]
    ks = [k if 0 < k < vocab else vocab for k in top_ks]
    if min(ks) < vocab:
        values = torch.topk(rows, max(ks), dim=-1).values
        threshold = values.gather(1, torch.tensor(ks)[:, None] - 1)
        rows = rows.masked_fill(rows < threshold, float("-inf"))
    if min(top_ps) < 1.0:
        sorted_logits, order = torch.sort(rows, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        mass_before = torch.cumsum(probs, dim=-1) - probs
        drop_sorted = mass_before >= torch.tensor(top_ps)[:, None]
        drop_sorted[:, 0] = False
        drop = torch.zeros_like(drop_sorted).scatter(1, order, drop_sorted)
        rows = rows.masked_fill(drop, float("-inf"))
    return rows


def sample_batch(logits: torch.Tensor, params: Sequence[SamplingParams]) -> list[int]:
    """One token per row of ``logits`` (``[rows, vocab]``), ``params[i]`` for row ``i``.

    For rows that need nothing per request: no penalties, constraint, logprobs or seed (a
    seeded request needs its own generator: use :func:`sample_token`). Greedy rows take
    the argmax, the others are drawn from torch's global RNG after temperature, top-k and
    top-p, exactly as :func:`sample_token` would, but in a few batched ops.
    """
    if all(is_greedy(p) for p in params):
        greedy: list[int] = torch.argmax(logits, dim=-1).tolist()
        return greedy
    drawn = [i for i, p in enumerate(params) if not is_greedy(p)]
    rows = logits[drawn].to(torch.float32)
    rows = rows / torch.tensor([params[i].temperature for i in drawn])[:, None]
    rows = _truncate_rows(rows, [params[i].top_k for i in drawn], [params[i].top_p for i in drawn])
    tokens = torch.multinomial(torch.softmax(rows, dim=-1), 1)[:, 0].tolist()
    out: list[int] = torch.argmax(logits, dim=-1).tolist()
    for i, token in zip(drawn, tokens, strict=True):
        out[i] = int(token)
    return out
