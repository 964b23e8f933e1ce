"""The continuous-batching scheduler: a pure state machine, no torch, no threads.

Each engine step the loop calls :meth:`Scheduler.schedule`, hands the resulting
:class:`SchedulerOutput` to the model runner, and feeds the sampled tokens back through
:meth:`Scheduler.update_from_output`, which decides who finished. Requests join (waiting →
running) and leave (finished or aborted) only between steps, i.e. at token boundaries.

KV-cache slots: a running sequence owns one row (*slot*) of the runner's cache. The
scheduler keeps the occupied slots dense, ``0..n-1``: when a sequence leaves from the
middle, the next :class:`SchedulerOutput` carries a :class:`SlotMove` that copies the
highest occupied row into the hole. Dense slots let the runner read the decode batch's
cache as a view instead of gathering it.

Prefill is chunked: each step spends at most ``max_prefill_tokens`` prompt tokens, so a
long prompt cannot stall everyone else's decoding for more than one chunk.

Prefix caching (:mod:`aiforge.engines.prefix_cache`, when the scheduler is given one): the
cache has ``max_num_seqs + max_entries`` rows. A sequence that leaves keeps its row's KV
*resident* (an entry of the prefix cache) in a row no running sequence uses. A joining
sequence whose prompt starts like an entry reuses that KV: when the entry sits in the row
it joins at (``n``) the prefix is used in place (no copy; an entry it does not wholly
reuse is first copied to a free row, so it stays for other prompts), else a
:class:`SlotMove` copies the matched prefix into its row; it then prefills only the
rest. An entry in the way of a running row (compaction, a join) is moved to a free row,
or evicted when none is free.
Every copy is a :class:`SlotMove`, applied in order before the step's forward passes.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from aiforge.engines.core import FinishReason
from aiforge.engines.prefix_cache import PrefixCache, PrefixCacheStats, PrefixMatch

__all__ = [
    "DecodeItem",
    "PrefillChunk",
    "Scheduler",
    "SchedulerOutput",
    "SequenceState",
    "SequenceStatus",
    "SlotMove",
    "StepEvent",
    "StopCriteria",
]


class SequenceStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(frozen=True, slots=True)
class StopCriteria:
    """When a sequence ends. The engine folds EOS ids into ``stop_token_ids`` unless ignored."""

    max_tokens: int
    max_model_len: int
    stop_token_ids: frozenset[int] = frozenset()


@dataclass(slots=True)
class SequenceState:
    """One request as the scheduler sees it."""

    request_id: str
    prompt_token_ids: list[int]
    stop: StopCriteria
    output_token_ids: list[int] = field(default_factory=list)
    num_computed_tokens: int = 0
    """Tokens whose keys and values are in the cache."""
    slot: int | None = None
    status: SequenceStatus = SequenceStatus.WAITING
    cacheable: bool = True
    """Whether its KV may be reused by, or reuse, other sequences' (not for image prompts)."""
    num_cached_tokens: int = 0
    """Prompt tokens whose KV came from the prefix cache."""

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    @property
    def in_prefill(self) -> bool:
        return self.num_computed_tokens < len(self.prompt_token_ids)

    def computed_token_ids(self) -> list[int]:
        """The tokens whose keys and values are in the cache, in order."""
        return [*self.prompt_token_ids, *self.output_token_ids][: self.num_computed_tokens]

    def token_at(self, position: int) -> int:
        n_prompt = len(self.prompt_token_ids)
        if position < n_prompt:
            return self.prompt_token_ids[position]
        return self.output_token_ids[position - n_prompt]


@dataclass(frozen=True, slots=True)
class SlotMove:
    """Copy cache row ``src`` (its first ``length`` positions) into row ``dst``: a running
    sequence compacted, a resident entry moved out of the way, or a cached prefix reused."""

    src: int
    dst: int
    length: int


@dataclass(frozen=True, slots=True)
class PrefillChunk:
    """Prompt tokens ``[start, start + len(token_ids))`` of a sequence, written to ``slot``."""

    request_id: str
    slot: int
    start: int
    token_ids: tuple[int, ...]
    is_last: bool
    """The prompt's final chunk: the runner samples the first output token from it."""


@dataclass(frozen=True, slots=True)
class DecodeItem:
    """Feed ``token_id`` at ``position`` of the sequence in ``slot`` and sample the next."""

    request_id: str
    slot: int
    position: int
    token_id: int


@dataclass(frozen=True, slots=True)
class SchedulerOutput:
    """One engine step. The runner applies ``moves`` first, then prefills, then decodes."""

    moves: tuple[SlotMove, ...] = ()
    prefills: tuple[PrefillChunk, ...] = ()
    decodes: tuple[DecodeItem, ...] = ()
    """Sorted by slot."""
    freed: tuple[str, ...] = ()
    """Requests that left since the last step: the runner drops their per-request state."""

    @property
    def has_work(self) -> bool:
        return bool(self.prefills or self.decodes)


@dataclass(frozen=True, slots=True)
class StepEvent:
    """A token committed to a sequence; ``finish_reason`` is set on its last one."""

    request_id: str
    token_id: int
    finish_reason: FinishReason | None = None
    cached_tokens: int = 0
    """On a sequence's first token: prompt tokens served from the prefix cache."""


class Scheduler:
    """Admits, batches and retires sequences; see the module docstring for the protocol."""

    def __init__(
        self,
        *,
        max_num_seqs: int,
        max_prefill_tokens: int = 512,
        prefix_cache: PrefixCache | None = None,
    ) -> None:
        """``prefix_cache``: reuse finished sequences' KV (the runner's cache then needs
        :attr:`num_slots` rows); None: every sequence computes its whole prompt."""
        if max_num_seqs < 1 or max_prefill_tokens < 1:
            raise ValueError("max_num_seqs and max_prefill_tokens must be at least 1")
        self.max_num_seqs = max_num_seqs
        self.max_prefill_tokens = max_prefill_tokens
        self._cache = prefix_cache
        self.num_slots = max_num_seqs + (
            prefix_cache.max_entries if prefix_cache is not None else 0
        )
        """Rows of the KV cache: running sequences plus resident entries."""
        self._waiting: deque[SequenceState] = deque()
        self._by_slot: dict[int, SequenceState] = {}
        self._by_id: dict[str, SequenceState] = {}
        self._freed: list[str] = []

    # -- queries -------------------------------------------------------------
    @property
    def num_running(self) -> int:
        return len(self._by_slot)

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    def has_unfinished(self) -> bool:
        return bool(self._waiting or self._by_slot)

    def get(self, request_id: str) -> SequenceState | None:
        return self._by_id.get(request_id)

    def prefix_cache_stats(self) -> PrefixCacheStats | None:
        """The prefix cache's counters; None when caching is off. Any thread may call it."""
        return None if self._cache is None else self._cache.stats()

    def clear_prefix_cache(self) -> None:
        """Forget every resident entry (after a failed step their KV cannot be trusted)."""
        if self._cache is not None:
            self._cache.clear()

    # -- requests in and out ---------------------------------------------------
    def add(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        stop: StopCriteria,
        *,
        cacheable: bool = True,
    ) -> None:
        """Queue a request. The prompt must be non-empty and shorter than ``max_model_len``.

        ``cacheable=False`` keeps it out of the prefix cache both ways (a prompt whose KV
        depends on more than its token ids, such as one with images)."""
        if request_id in self._by_id:
            raise ValueError(f"duplicate request id {request_id!r}")
        if not prompt_token_ids or len(prompt_token_ids) >= stop.max_model_len:
            raise ValueError("prompt must hold 1 to max_model_len - 1 tokens")
        if stop.max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        seq = SequenceState(request_id, list(prompt_token_ids), stop, cacheable=cacheable)
        self._waiting.append(seq)
        self._by_id[request_id] = seq

    def abort(self, request_id: str) -> bool:
        """Drop a request wherever it is; its slot is reused from the next step. Idempotent."""
        seq = self._by_id.get(request_id)
        if seq is None:
            return False
        if seq.status is SequenceStatus.WAITING:
            self._waiting.remove(seq)
            seq.status = SequenceStatus.FINISHED
            del self._by_id[request_id]
            self._freed.append(request_id)
        else:
            self._retire(seq)
        return True

    def abort_all(self) -> list[str]:
        ids = list(self._by_id)
        for request_id in ids:
            self.abort(request_id)
        return ids

    # -- one step ------------------------------------------------------------------
    def schedule(self) -> SchedulerOutput:
        """Plan the next step: compact slots, continue prefills, admit, decode the rest."""
        moves = self._compact()
        budget = self.max_prefill_tokens
        prefills: list[PrefillChunk] = []
        decodes: list[DecodeItem] = []
        for slot in sorted(self._by_slot):
            seq = self._by_slot[slot]
            if seq.in_prefill:
                if budget > 0:
                    chunk = self._prefill_chunk(seq, budget)
                    budget -= len(chunk.token_ids)
                    prefills.append(chunk)
            else:
                position = seq.num_tokens - 1
                decodes.append(DecodeItem(seq.request_id, slot, position, seq.token_at(position)))
        while self._waiting and budget > 0 and len(self._by_slot) < self.max_num_seqs:
            seq = self._waiting.popleft()
            moves.extend(self._admit(seq))
            chunk = self._prefill_chunk(seq, budget)
            budget -= len(chunk.token_ids)
            prefills.append(chunk)
        freed = tuple(self._freed)
        self._freed.clear()
        return SchedulerOutput(tuple(moves), tuple(prefills), tuple(decodes), freed)

    def update_from_output(
        self,
        scheduled: SchedulerOutput,
        sampled: Mapping[str, int],
        constraint_finished: frozenset[str] = frozenset(),
    ) -> list[StepEvent]:
        """Commit one step's sampled tokens; returns one event per token, finishes included.

        ``sampled`` maps request id to the token sampled for it (decodes and last prefill
        chunks). ``constraint_finished`` names sequences whose grammar just completed.
        """
        events: list[StepEvent] = []
        for chunk in scheduled.prefills:
            seq = self._running(chunk.request_id)
            if seq is not None:
                seq.num_computed_tokens += len(chunk.token_ids)
                if chunk.is_last:
                    event = self._commit(seq, sampled, constraint_finished)
                    events.append(replace(event, cached_tokens=seq.num_cached_tokens))
        for item in scheduled.decodes:
            seq = self._running(item.request_id)
            if seq is not None:
                seq.num_computed_tokens += 1
                events.append(self._commit(seq, sampled, constraint_finished))
        return events

    # -- internals -------------------------------------------------------------------
    def _running(self, request_id: str) -> SequenceState | None:
        seq = self._by_id.get(request_id)
        if seq is None or seq.status is not SequenceStatus.RUNNING:
            return None
        return seq

    def _prefill_chunk(self, seq: SequenceState, budget: int) -> PrefillChunk:
        assert seq.slot is not None
        start = seq.num_computed_tokens
        end = min(len(seq.prompt_token_ids), start + budget)
        tokens = tuple(seq.prompt_token_ids[start:end])
        return PrefillChunk(
            seq.request_id, seq.slot, start, tokens, end == len(seq.prompt_token_ids)
        )

    def _commit(
        self, seq: SequenceState, sampled: Mapping[str, int], constraint_finished: frozenset[str]
    ) -> StepEvent:
        token = sampled[seq.request_id]
        seq.output_token_ids.append(token)
        reason = self._finish_reason(seq, token, seq.request_id in constraint_finished)
        if reason is not None:
            self._retire(seq)
        return StepEvent(seq.request_id, token, reason)

    @staticmethod
    def _finish_reason(seq: SequenceState, token: int, grammar_done: bool) -> FinishReason | None:
        if token in seq.stop.stop_token_ids or grammar_done:
            return "stop"
        if len(seq.output_token_ids) >= seq.stop.max_tokens:
            return "length"
        if seq.num_tokens >= seq.stop.max_model_len:
            return "length"
        return None

    def _retire(self, seq: SequenceState) -> None:
        if seq.slot is not None:
            del self._by_slot[seq.slot]
            if self._cache is not None and seq.cacheable and seq.num_computed_tokens:
                # Rows the cache frees need nothing done: a free row is just not read.
                self._cache.insert(seq.slot, seq.computed_token_ids())
        seq.slot = None
        seq.status = SequenceStatus.FINISHED
        del self._by_id[seq.request_id]
        self._freed.append(seq.request_id)

    def _compact(self) -> list[SlotMove]:
        """Fill holes left by departed sequences with the highest occupied slots (moving
        a resident entry out of a hole first)."""
        moves: list[SlotMove] = []
        n = len(self._by_slot)
        holes = sorted(slot for slot in range(n) if slot not in self._by_slot)
        movers = sorted((slot for slot in self._by_slot if slot >= n), reverse=True)
        for dst, src in zip(holes, movers, strict=True):
            moves.extend(self._vacate(dst, floor=n))
            seq = self._by_slot.pop(src)
            seq.slot = dst
            self._by_slot[dst] = seq
            moves.append(SlotMove(src, dst, seq.num_computed_tokens))
        return moves

    # -- prefix caching ---------------------------------------------------------------
    def _admit(self, seq: SequenceState) -> list[SlotMove]:
        """Give a joining sequence the next dense row, with the KV of its longest cached
        prefix in it (adopted in place, or copied there)."""
        slot = len(self._by_slot)
        moves: list[SlotMove] = []
        match: PrefixMatch | None = None
        if self._cache is not None and seq.cacheable:
            match = self._cache.lookup(seq.prompt_token_ids, prefer=slot)
        if match is not None and match.location == slot:
            assert self._cache is not None
            if match.covers_entry:  # adopt: the new sequence holds all of it, and more
                self._cache.take(slot)
            else:  # the prefix stays in place; the entry's copy moves on, room allowing
                moves.extend(self._vacate(slot, floor=slot + 1))
        else:
            keep = None if match is None else match.location
            moves.extend(self._vacate(slot, floor=slot + 1, keep=keep))
            if match is not None:
                assert self._cache is not None
                moves.append(SlotMove(match.location, slot, match.length))
                if match.covers_entry:  # the new sequence will hold all of it, and more
                    self._cache.take(match.location)
        seq.slot = slot
        seq.status = SequenceStatus.RUNNING
        self._by_slot[slot] = seq
        if match is not None:
            seq.num_computed_tokens = seq.num_cached_tokens = match.length
        return moves

    def _vacate(self, row: int, *, floor: int, keep: int | None = None) -> list[SlotMove]:
        """Free ``row`` of its resident entry, if any, for a running sequence: move the
        entry to the highest free row at or above ``floor``, or, with none free, evict the
        least recently used entry there (or this one) to make room. ``keep`` (an entry
        about to be copied from) is never evicted."""
        cache = self._cache
        if cache is None or row not in cache:
            return []
        spare = next(
            (
                r
                for r in range(self.num_slots - 1, floor - 1, -1)
                if r != row and r not in self._by_slot and r not in cache
            ),
            None,
        )
        if spare is None:
            exclude = {loc for loc in cache.locations() if loc < floor and loc != row}
            if keep is not None:
                exclude.add(keep)
            spare = cache.evict_lru(exclude)
            assert spare is not None  # ``row`` itself is never excluded
            if spare == row:
                return []
        length = cache.length(row)
        cache.relocate(row, spare)
        return [SlotMove(row, spare, length)]
