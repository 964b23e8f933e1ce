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
  whose KV the runner must clear before decoding (they *leave* at a token boundary);
* after every join and leave the running sequences hold *consecutive* ids, so llama.cpp
  runs the step as one pass over the weights (:mod:`aiforge.engines.llamacpp.seq_ids`):
  a sequence left outside the run moves in (:class:`MoveSequence`).

With a prefix cache (:mod:`aiforge.engines.prefix_cache`) there are ``max_num_seqs +
max_entries`` sequence ids. A sequence that leaves keeps its KV as a resident entry under
its id; a joining sequence whose prompt starts like an entry either *adopts* that id
(when it reuses all of the entry and the id lies in the run) or gets another id and a
:class:`CopyPrefix` of the matched positions (the entry stays for others), then prefills
only the rest. An entry in the way of the run moves out to a free id (or, with none,
the least recently used entry outside the run is evicted to make one). Ids of evicted
entries are cleared like those of finished sequences. Every KV change is in
:attr:`StepPlan.memory`, in the order it must run.

The loop calls :meth:`BatchScheduler.schedule`, decodes the plan, samples one token for
each entry of :attr:`StepPlan.sample` and feeds them back via
:meth:`BatchScheduler.update_from_output`, which says who finished and why. No llama.cpp,
torch, threads or clocks here.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from aiforge.engines.core import FinishReason, TokenEvent
from aiforge.engines.llamacpp.seq_ids import contiguous_window
from aiforge.engines.prefix_cache import PrefixCache, PrefixCacheStats, PrefixMatch

__all__ = [
    "BatchScheduler",
    "BatchToken",
    "CopyPrefix",
    "KeepPrefix",
    "MemoryOp",
    "MoveSequence",
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


@dataclass(frozen=True, slots=True)
class MoveSequence:
    """Move all of ``src``'s KV to the empty sequence ``dst``, leaving ``src`` empty."""

    src: int
    dst: int


MemoryOp = KeepPrefix | CopyPrefix | MoveSequence


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
    resident entry was evicted) cleared, sequences and entries moved to keep the running
    ids consecutive, cached prefixes copied."""
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
    tokens in descending id order ran as eight passes (2.7x the CPU time of one). The ids
    themselves are consecutive by construction (:func:`contiguous_window`).
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
        self._free_ids: set[int] = set(range(self.num_seq_ids))
        """Ids holding no KV: neither a running sequence nor a resident entry."""
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
        """Admit waiting requests, keeping every running sequence on one run of
        consecutive ids, then plan one decode token per running sequence and prompt
        chunks for sequences in prefill, within ``max_batch_tokens``."""
        joining: list[SequenceSpec] = []
        while self._waiting and len(self._running) + len(joining) < self.max_num_seqs:
            joining.append(self._waiting.popleft())
        if joining or not self._ids_consecutive():
            self._place(joining)
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
        self._free_ids.add(seq_id)

    # -- sequence ids ----------------------------------------------------------------
    def _ids_consecutive(self) -> bool:
        ids = [seq.seq_id for seq in self._running.values()]
        return not ids or max(ids) - min(ids) == len(ids) - 1  # ids are distinct

    def _place(self, joining: list[SequenceSpec]) -> None:
        """Give the joining requests ids so that they and the running sequences hold one
        run of consecutive ids (:func:`contiguous_window`): a joining sequence adopts an
        entry it reuses whole where it lies in the run, running sequences outside the run
        move in, entries in its way move out, the rest take free ids of the run."""
        matches = [self._lookup(spec) for spec in joining]
        adoptable: dict[int, int] = {}  # entry location -> the joining sequence taking it
        for index, match in enumerate(matches):
            if match is not None and match.covers_entry:
                adoptable.setdefault(match.location, index)
        entries = self._cache.locations() if self._cache is not None else []
        running = {seq.seq_id for seq in self._running.values()}
        size = len(running) + len(joining)
        window = contiguous_window(self.num_seq_ids, size, running, entries, adoptable)
        adopted = {i: loc for loc, i in adoptable.items() if loc in window}
        for location in adopted.values():
            assert self._cache is not None
            self._cache.take(location)
        holes = [i for i in window if i not in running and i not in adopted.values()]
        keep = {m.location for m in matches if m is not None}
        moved: dict[int, int | None] = {}
        for seq in [s for s in self._running.values() if s.seq_id not in window]:
            dst = self._claim(holes, window, keep, moved)
            if seq.num_computed:
                self._memory.append(MoveSequence(seq.seq_id, dst))
            self._free_ids.add(seq.seq_id)
            seq.seq_id = dst
        for index, (spec, match) in enumerate(zip(joining, matches, strict=True)):
            if index in adopted:  # its KV is the entry's, as it lies
                seq = _Sequence(spec, adopted[index])
            else:
                seq = _Sequence(spec, self._claim(holes, window, keep, moved))
                src = self._source(match, moved, adopted.values())
                if match is not None and src is not None:
                    self._memory.append(CopyPrefix(src, seq.seq_id, match.length))
                else:
                    match = None
            if match is not None:
                seq.num_computed = seq.num_cached = match.length
            self._running[spec.request_id] = seq

    def _claim(
        self, holes: list[int], window: range, keep: set[int], moved: dict[int, int | None]
    ) -> int:
        """An id of the run for one sequence: a free one first, else one whose entry moves
        out of the way (where it went is recorded in ``moved``)."""
        seq_id = next((h for h in holes if h in self._free_ids), holes[0])
        holes.remove(seq_id)
        if seq_id in self._free_ids:
            self._free_ids.remove(seq_id)
        else:
            moved[seq_id] = self._vacate(seq_id, window, keep)
        return seq_id

    def _vacate(self, location: int, window: range, keep: Iterable[int]) -> int | None:
        """Move the entry at ``location`` out of ``window`` to the highest free id, or to
        the id of the least recently used entry outside the window that no joining prompt
        copies from (evicted); with neither, evict it. Its new location, or None."""
        cache = self._cache
        assert cache is not None
        outside = [i for i in self._free_ids if i not in window]
        if outside:
            dst = max(outside)
            self._free_ids.remove(dst)
        else:
            kept = set(keep)
            in_place = [e for e in cache.locations() if e in window or e in kept]
            victim = cache.evict_lru(exclude=in_place)
            if victim is None:  # no room outside the window: the entry itself goes
                cache.evict_lru(exclude=[e for e in cache.locations() if e != location])
                self._memory.append(KeepPrefix(location))
                return None
            self._memory.append(KeepPrefix(victim))
            dst = victim
        self._memory.append(MoveSequence(location, dst))
        cache.relocate(location, dst)
        return dst

    def _source(
        self, match: PrefixMatch | None, moved: dict[int, int | None], adopted: Iterable[int]
    ) -> int | None:
        """Where the KV ``match`` names lies now (entries may have moved this step, or
        been adopted by another joining sequence: still intact until the decode); None
        when it is gone."""
        if match is None:
            return None
        location = moved.get(match.location, match.location)
        if location is None:
            return None
        in_cache = self._cache is not None and location in self._cache
        return location if in_cache or location in adopted else None

    def _lookup(self, spec: SequenceSpec) -> PrefixMatch | None:
        if self._cache is None or not spec.cacheable:
            return None
        return self._cache.lookup(spec.prompt_token_ids)
