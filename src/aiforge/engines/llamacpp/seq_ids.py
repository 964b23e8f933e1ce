"""Where running sequences live among llama.cpp's sequence ids: one consecutive run.

With one KV stream per sequence (``kv_unified = false``) llama.cpp splits a batch into
micro-batches with ``llama_batch_allocr::split_equal(n_ubatch, sequential=true)``: a
micro-batch takes sequences in batch order only while each one's id is the previous id
plus one. Every break in the run starts another micro-batch, and each micro-batch is one
more pass over the weights. So a decode step is one pass only when the running sequences'
ids are *consecutive* (``{5, 6, 7}`` is; ``{0, 1, 3}`` is two passes); where the run
starts does not matter.

Prefix-cache entries (finished sequences whose KV stays resident) and the ids of
sequences that finished in the middle of the run break it. Across KV streams llama.cpp
moves nothing cheaply: ``llama_memory_seq_cp`` copies the source stream's whole buffer
(``max_model_len`` cells of every layer), so each move costs about as much memory
traffic as a fraction of one pass over the weights. The scheduler therefore picks, each
step, the run of ids that needs the fewest moves (:func:`contiguous_window`) and moves
only what is in the way: running sequences outside the run come in, entries inside it
go out (or, when a joining prompt reuses an entry whole, that sequence takes the entry's
id as it is). Pure logic, no llama.cpp.
"""

from __future__ import annotations

from collections.abc import Collection

__all__ = ["contiguous_window", "moves_needed"]


def moves_needed(
    window: range, running: Collection[int], entries: Collection[int], adoptable: Collection[int]
) -> int:
    """KV moves to make ``window`` the running run: running sequences outside it, plus
    resident entries inside it that no joining sequence adopts where they are."""
    outside = sum(1 for seq_id in running if seq_id not in window)
    in_the_way = sum(1 for loc in entries if loc in window and loc not in adoptable)
    return outside + in_the_way


def contiguous_window(
    num_ids: int,
    size: int,
    running: Collection[int],
    entries: Collection[int] = (),
    adoptable: Collection[int] = (),
) -> range:
    """The ``size`` consecutive ids (of ``0 .. num_ids - 1``) the running sequences should
    hold after this step: the fewest :func:`moves_needed`, the lowest start among equals.

    ``running``: ids of sequences already running; ``entries``: ids holding resident
    prefix-cache entries; ``adoptable``: entries a joining sequence will take over whole
    (free inside the window). Joining sequences without such an entry fill the remaining
    ids, which costs nothing. Raises ``ValueError`` when ``size`` ids do not exist.
    """
    if not 0 <= size <= num_ids:
        raise ValueError(f"a run of {size} ids does not fit in {num_ids} sequence ids")
    best = range(size)
    best_cost = moves_needed(best, running, entries, adoptable)
    for start in range(1, num_ids - size + 1):
        if best_cost == 0:
            break
        window = range(start, start + size)
        cost = moves_needed(window, running, entries, adoptable)
        if cost < best_cost:
            best, best_cost = window, cost
    return best
