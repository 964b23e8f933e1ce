"""Continuous batching over llama.cpp sequence ids: a pure state machine.

llama.cpp batches by *sequence id*: one ``llama_batch`` carries tokens of many sequences,
each tagged with its ``seq_id`` and position, and every sequence owns its own slice of the
KV cache. This scheduler decides, step by step, which tokens go into that batch:

* every running sequence past its prompt contributes one token (its last sampled one);
* sequences still in their prompt (prefill) contribute a chunk, in arrival order, within
  the batch's token budget (``n_batch``), so a long prompt never stalls decoding for more
  than one step;
* waiting requests take a free sequence id at the start of a step (they *join* at a token
  boundary); finished and aborted ones give theirs back, and the next plan lists the ids
  whose KV the runner must clear before decoding (they *leave* at a token boundary).

With a prefix cache (:mod:`aiforge.engines.prefix_cache`) there are ``max_num_seqs +
max_entries`` sequence ids. A sequence that leaves keeps its KV as a resident entry under
its id; a joining sequence whose prompt starts like an entry either *adopts* that id
(when it reuses all of the entry) or gets another id and a :class:`CopyPrefix` of the
matched positions (the entry stays for others), then prefills only the rest. Ids of
evicted entries are cleared like those of finished sequences. Every KV change is in
:attr:`StepPlan.memory`, in the order it must run.

The loop calls :meth:`BatchScheduler.schedule`, decodes the plan, samples one token for
each entry of :attr:`StepPlan.sample` and feeds them back via
:meth:`BatchScheduler.update_from_output`, which says who finished and why. No llama.cpp,
torch, threads or clocks here.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field

from aiforge.engines.core import FinishReason, TokenEvent
from aiforge.engines.prefix_cache import PrefixCache, PrefixCacheStats, PrefixMatch

__all__ = [
    "BatchScheduler",
    "BatchToken",
    "CopyPrefix",
    "KeepPrefix",
    "MemoryOp",
    "SampledOutput",
    "SequenceSpec",
    "StepEvent",
    "StepPlan",
]


@dataclass(frozen=True, slots=True)
class SequenceSpec:
    """A request as the scheduler needs it: tokens in, and when to stop.

    ``stop_token_ids`` already includes the model's EOS ids unless the request ignores EOS.
    """

    request_id: str
    prompt_token_ids: tuple[int, ...]
    max_tokens: int
    stop_token_ids: frozenset[int] = frozenset()
    cacheable: bool = True
    """Whether it may reuse, and leave behind, KV in the prefix cache."""


@dataclass(frozen=True, slots=True)
class KeepPrefix:
    """Keep positions ``[0, length)`` of ``seq_id``'s KV and clear the rest (0: all)."""

    seq_id: int
    length: int = 0


@dataclass(frozen=True, slots=True)
class CopyPrefix:
    """Give the empty sequence ``dst`` the KV of positions ``[0, length)`` of ``src``."""

    src: int
    dst: int
    length: int


MemoryOp = KeepPrefix | CopyPrefix


@dataclass(frozen=True, slots=True)
class BatchToken:
    """One entry of a ``llama_batch``."""

    seq_id: int
    token_id: int
    position: int
    wants_logits: bool


@dataclass(frozen=True, slots=True)
class StepPlan:
    """What the runner does in one step, in this order: change KV, decode, sample."""

    memory: tuple[MemoryOp, ...]
    """KV changes to make, in order, before decoding: ids whose owner left (or whose
    resident entry was evicted) cleared, cached prefixes copied or trimmed."""
    tokens: tuple[BatchToken, ...]
    sample: tuple[tuple[str, int], ...]
    """``(request_id, batch_index)``: sample a token from the logits of that batch entry."""

    @property
    def released_seq_ids(self) -> tuple[int, ...]:
        """Sequence ids whose KV this plan clears entirely."""
        return tuple(
            op.seq_id for op in self.memory if isinstance(op, KeepPrefix) and not op.length
        )

    @property
    def has_work(self) -> bool:
        return bool(self.tokens)


def _in_seq_id_order(
    memory: tuple[MemoryOp, ...], tokens: list[BatchToken], sample: list[tuple[str, int]]
) -> StepPlan:
    """The plan with its batch sorted by sequence id (each sequence's tokens in order).

    With one KV stream per sequence llama.cpp splits a batch into micro-batches of
    *consecutive ascending* sequence ids, each one more pass over the weights: eight decode
    tokens in descending id order ran as eight passes (2.7x the CPU time of one).
    """
    order = sorted(range(len(tokens)), key=lambda i: tokens[i].seq_id)  # stable
    new_index = {old: new for new, old in enumerate(order)}
    return StepPlan(
        memory,
        tuple(tokens[i] for i in order),
        tuple((rid, new_index[index]) for rid, index in sample),
    )


@dataclass(frozen=True, slots=True)
class SampledOutput:
    """The token the runner sampled for one request of the plan."""

    request_id: str
    token_id: int
    logprob: float | None = None
    top_logprobs: tuple[tuple[int, float], ...] = ()
    constraint_finished: bool = False
    """The request's grammar is complete: it ends with finish_reason ``"stop"``."""


@dataclass(frozen=True, slots=True)
class StepEvent:
    request_id: str
    event: TokenEvent


@dataclass(slots=True)
class _Sequence:
    spec: SequenceSpec
    seq_id: int
    output: list[int] = field(default_factory=list)
    num_computed: int = 0
    """Tokens already decoded into this sequence's KV cache."""
    num_cached: int = 0
    """Prompt tokens whose KV came from the prefix cache."""

    @property
    def num_tokens(self) -> int:
        return len(self.spec.prompt_token_ids) + len(self.output)

    @property
    def in_prefill(self) -> bool:
        return self.num_computed < len(self.spec.prompt_token_ids)


class BatchScheduler:
    """Waiting and running queues over ``max_num_seqs`` llama.cpp sequence ids.

    ``max_batch_tokens`` is the context's ``n_batch``; it must hold at least one decode
    token per sequence. ``max_model_len`` is each sequence's KV capacity: prompt plus
    output never exceed it.
    """

    def __init__(
        self,
        *,
        max_num_seqs: int,
        max_batch_tokens: int,
        max_model_len: int,
        prefix_cache: PrefixCache | None = None,
    ) -> None:
        """``prefix_cache``: keep finished sequences' KV for reuse (the context then needs
        :attr:`num_seq_ids` sequences); None: every sequence computes its whole prompt."""
        if max_num_seqs < 1:
            raise ValueError("max_num_seqs must be at least 1")
        if max_batch_tokens < max_num_seqs:
            raise ValueError(
                f"max_batch_tokens ({max_batch_tokens}) must be >= max_num_seqs ({max_num_seqs})"
            )
        self.max_model_len = max_model_len
        self.max_batch_tokens = max_batch_tokens
        self.max_num_seqs = max_num_seqs
        self._cache = prefix_cache
        self.num_seq_ids = max_num_seqs + (
            prefix_cache.max_entries if prefix_cache is not None else 0
        )
        # A min-heap: the lowest free id first, so running sequences keep consecutive ids.
        self._free_ids: list[int] = list(range(self.num_seq_ids))
        self._waiting: deque[SequenceSpec] = deque()
        self._running: dict[str, _Sequence] = {}
        self._memory: list[MemoryOp] = []

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    @property
    def num_running(self) -> int:
        return len(self._running)

    @property
    def has_unfinished(self) -> bool:
        return bool(self._waiting or self._running)

    def running_seq_ids(self) -> dict[str, int]:
        return {rid: seq.seq_id for rid, seq in self._running.items()}

    def prefix_cache_stats(self) -> PrefixCacheStats | None:
        """The prefix cache's counters; None when caching is off. Any thread may call it."""
        return None if self._cache is None else self._cache.stats()

    def clear_prefix_cache(self) -> None:
        """Forget every resident entry; the next plan clears their KV (after a failed
        decode, KV written past what the scheduler knows of cannot be trusted)."""
        if self._cache is not None:
            for seq_id in self._cache.clear():
                self._free(seq_id)

    def add(self, spec: SequenceSpec) -> None:
        """Queue a request; it joins the batch at the next :meth:`schedule` with a free id."""
        n_prompt = len(spec.prompt_token_ids)
        if n_prompt == 0:
            raise ValueError("the prompt must hold at least one token")
        if n_prompt >= self.max_model_len:
            raise ValueError(
                f"the prompt has {n_prompt} tokens but the context holds {self.max_model_len}"
            )
        if spec.max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        self._waiting.append(spec)

    def abort(self, request_id: str) -> bool:
        """Drop a request wherever it is; its sequence id is released at the next step."""
        for spec in self._waiting:
            if spec.request_id == request_id:
                self._waiting.remove(spec)
                return True
        seq = self._running.pop(request_id, None)
        if seq is None:
            return False
        self._release(seq)
        return True

    def abort_all(self) -> list[str]:
        """Drop every request (shutdown); returns their ids, running ones first."""
        ids = [*self._running, *(spec.request_id for spec in self._waiting)]
        for rid in ids:
            self.abort(rid)
        return ids

    def schedule(self) -> StepPlan:
        """Admit waiting requests, then plan one decode token per running sequence and
        prompt chunks for sequences in prefill, within ``max_batch_tokens``."""
        while self._waiting and len(self._running) < self.max_num_seqs:
            spec = self._waiting.popleft()
            self._running[spec.request_id] = self._admit(spec)
        memory, self._memory = tuple(self._memory), []
        tokens: list[BatchToken] = []
        sample: list[tuple[str, int]] = []
        for rid, seq in self._running.items():
            if not seq.in_prefill:
                sample.append((rid, len(tokens)))
                tokens.append(BatchToken(seq.seq_id, seq.output[-1], seq.num_computed, True))
                seq.num_computed += 1
        for rid, seq in self._running.items():
            budget = self.max_batch_tokens - len(tokens)
            if budget <= 0:
                break
            if seq.in_prefill:
                self._plan_prefill(rid, seq, budget, tokens, sample)
        return _in_seq_id_order(memory, tokens, sample)

    def _plan_prefill(
        self,
        request_id: str,
        seq: _Sequence,
        budget: int,
        tokens: list[BatchToken],
        sample: list[tuple[str, int]],
    ) -> None:
        prompt = seq.spec.prompt_token_ids
        end = min(len(prompt), seq.num_computed + budget)
        for pos in range(seq.num_computed, end):
            last = pos == len(prompt) - 1
            if last:
                sample.append((request_id, len(tokens)))
            tokens.append(BatchToken(seq.seq_id, prompt[pos], pos, last))
        seq.num_computed = end

    def update_from_output(self, outputs: list[SampledOutput]) -> list[StepEvent]:
        """Record sampled tokens; finished requests leave and release their sequence id.

        Outputs of requests aborted since the plan was made are ignored.
        """
        events: list[StepEvent] = []
        for out in outputs:
            seq = self._running.get(out.request_id)
            if seq is None:
                continue
            seq.output.append(out.token_id)
            reason = self._finish_reason(seq, out)
            if reason is not None:
                del self._running[out.request_id]
                self._release(seq)
            cached = seq.num_cached if len(seq.output) == 1 else 0
            event = TokenEvent(out.token_id, out.logprob, out.top_logprobs, reason, cached)
            events.append(StepEvent(out.request_id, event))
        return events

    def _finish_reason(self, seq: _Sequence, out: SampledOutput) -> FinishReason | None:
        if out.constraint_finished or out.token_id in seq.spec.stop_token_ids:
            return "stop"
        if len(seq.output) >= seq.spec.max_tokens or seq.num_tokens >= self.max_model_len:
            return "length"
        return None

    def _release(self, seq: _Sequence) -> None:
        """The sequence left: keep its KV as a resident entry, or clear its id."""
        if self._cache is not None and seq.spec.cacheable and seq.num_computed:
            tokens = [*seq.spec.prompt_token_ids, *seq.output][: seq.num_computed]
            for seq_id in self._cache.insert(seq.seq_id, tokens):
                self._free(seq_id)
        else:
            self._free(seq.seq_id)

    def _free(self, seq_id: int) -> None:
        self._memory.append(KeepPrefix(seq_id))
        heapq.heappush(self._free_ids, seq_id)

    # -- prefix caching ---------------------------------------------------------------
    def _admit(self, spec: SequenceSpec) -> _Sequence:
        """A sequence id for a joining request, holding its longest cached prefix."""
        match: PrefixMatch | None = None
        if self._cache is not None and spec.cacheable:
            match = self._cache.lookup(spec.prompt_token_ids)
        if match is None:
            seq_id = self._take_id(keep=None)
            assert seq_id is not None  # fewer than max_num_seqs run: an id is free or evictable
            return _Sequence(spec, seq_id)
        assert self._cache is not None
        if match.covers_entry:  # adopt the entry's id: the new sequence holds it all, and more
            self._cache.take(match.location)
            seq_id = match.location
        else:  # copy, so the entry stays for other prompts that share it
            copy_to = self._take_id(keep=match.location)
            assert copy_to is not None  # ids outnumber running sequences plus entries
            self._memory.append(CopyPrefix(match.location, copy_to, match.length))
            seq_id = copy_to
        return _Sequence(spec, seq_id, num_computed=match.length, num_cached=match.length)

    def _take_id(self, *, keep: int | None) -> int | None:
        """A free sequence id, else the id of the least recently used entry (evicted and
        cleared) other than ``keep``; None when there is neither."""
        if self._free_ids:
            return heapq.heappop(self._free_ids)
        if self._cache is None:
            return None
        seq_id = self._cache.evict_lru(exclude=() if keep is None else (keep,))
        if seq_id is not None:
            self._memory.append(KeepPrefix(seq_id))
        return seq_id
