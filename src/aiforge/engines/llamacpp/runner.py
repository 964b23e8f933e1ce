"""One llama.cpp model and context, driven through llama-cpp-python's low-level C API.

The runner executes what :class:`~aiforge.engines.llamacpp.scheduler.BatchScheduler`
plans: it changes the KV cache as planned (clears sequences that left, copies or trims
prefix-cache entries, moves a sequence to another id: ``llama_memory_seq_cp`` /
``llama_memory_seq_rm``), decodes one
``llama_batch`` holding tokens of many sequences (each with its own ``seq_id``), and hands
out logits rows. It knows nothing about requests or sampling. Not thread-safe: the
engine's loop thread is its only caller once the engine has started.

The context gives every sequence its own KV stream (``kv_unified = false``) of
``max_model_len`` cells, so ``n_ctx = max_model_len * (max_num_seqs + resident_seqs)``: a
sequence can always grow to the full length, and decoding one sequence never attends over
the others' cells. The ``resident_seqs`` extra sequences hold the prefix cache's entries;
copying an entry into another sequence copies its whole KV stream (llama.cpp copies across
streams only whole), which is still far cheaper than computing the prefix again.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aiforge.engines.llamacpp.scheduler import BatchToken, CopyPrefix, MemoryOp, MoveSequence

__all__ = ["LlamaRunner", "RunnerConfig", "default_max_model_len", "silence_llama_logs"]

_backend_lock = threading.Lock()
_backend_ready = False


@dataclass(frozen=True, slots=True)
class RunnerConfig:
    model_path: Path
    max_model_len: int | None = None
    """Per-sequence context; None: :func:`default_max_model_len`."""
    max_num_seqs: int = 16
    max_batch_tokens: int = 512
    threads: int | None = None
    """CPU threads for decoding; None: every core."""
    resident_seqs: int = 0
    """Extra sequences for the prefix cache's resident entries (0: no prefix caching)."""


DEFAULT_MAX_MODEL_LEN = 4096
"""The cap on a GGUF's (often huge) training context when none is asked for: KV memory is
allocated up front, ``max_model_len * max_num_seqs`` cells."""
DEFAULT_KV_CELLS = 32768
"""With no ``max_model_len`` given, the KV cache holds at most this many tokens in all
(Qwen3-0.6B: ~3.5 GiB in f16), shared evenly by the sequences, never under 1024 each."""


def default_max_model_len(n_ctx_train: int, max_num_seqs: int) -> int:
    """Per-sequence context when none is asked for (see :data:`DEFAULT_KV_CELLS`)."""
    fair_share = max(DEFAULT_KV_CELLS // max_num_seqs, 1024)
    return min(n_ctx_train, DEFAULT_MAX_MODEL_LEN, fair_share)


def _null_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    """Drop llama.cpp's own logging (model-load chatter on stderr)."""


_NULL_LOG: Any = None


def silence_llama_logs() -> None:
    """Route llama.cpp's log output nowhere (it otherwise writes hundreds of lines)."""
    global _NULL_LOG
    import llama_cpp

    if _NULL_LOG is None:
        # Kept in a module global: llama.cpp calls it for the life of the process.
        _NULL_LOG = llama_cpp.llama_log_callback(_null_log)
    llama_cpp.llama_log_set(_NULL_LOG, ctypes.c_void_p(0))


def _init_backend() -> None:
    global _backend_ready
    import llama_cpp

    with _backend_lock:
        if not _backend_ready:
            llama_cpp.llama_backend_init()
            _backend_ready = True


class LlamaRunner:
    """A loaded GGUF model with a multi-sequence context and one reusable batch."""

    def __init__(self, config: RunnerConfig) -> None:
        import llama_cpp

        self._ll = llama_cpp
        _init_backend()
        model_params = llama_cpp.llama_model_default_params()
        model = llama_cpp.llama_model_load_from_file(str(config.model_path).encode(), model_params)
        if not model:
            raise ValueError(f"llama.cpp could not load the GGUF file {config.model_path}")
        self._model = model
        self._vocab = llama_cpp.llama_model_get_vocab(model)
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self._vocab))
        self.n_ctx_train = int(llama_cpp.llama_model_n_ctx_train(model))
        self.max_num_seqs = config.max_num_seqs
        self.resident_seqs = config.resident_seqs
        if config.resident_seqs and not self.can_trim_sequences():
            self.resident_seqs = 0  # recurrent state cannot be cut at a position: no reuse
        self.max_batch_tokens = max(config.max_batch_tokens, config.max_num_seqs)
        wanted = config.max_model_len or default_max_model_len(
            self.n_ctx_train, config.max_num_seqs
        )
        self._ctx = self._new_context(config, wanted)
        self.max_model_len = int(llama_cpp.llama_n_ctx_seq(self._ctx))
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self._batch = llama_cpp.llama_batch_init(self.max_batch_tokens, 0, 1)
        self._closed = False

    def _new_context(self, config: RunnerConfig, max_model_len: int) -> Any:
        ll = self._ll
        params = ll.llama_context_default_params()
        n_seqs = config.max_num_seqs + self.resident_seqs
        params.n_ctx = max_model_len * n_seqs
        params.n_batch = self.max_batch_tokens
        params.n_ubatch = self.max_batch_tokens
        params.n_seq_max = n_seqs
        params.kv_unified = False
        threads = config.threads or os.cpu_count() or 1
        params.n_threads = threads
        params.n_threads_batch = threads
        params.no_perf = True
        ctx = ll.llama_init_from_model(self._model, params)
        if not ctx:
            ll.llama_model_free(self._model)
            raise RuntimeError(
                f"llama.cpp could not create a context of {max_model_len} tokens x "
                f"{n_seqs} sequences (out of memory?)"
            )
        return ctx

    def eog_token_ids(self) -> frozenset[int]:
        """Every token llama.cpp treats as end of generation.

        Besides the model's special tokens (Qwen: ``<|im_end|>``, ``<|endoftext|>``…)
        llama.cpp flags some *ordinary* tokens by their text (Qwen's ``</s>``) and marks
        them as control tokens; :func:`~aiforge.engines.llamacpp.loading.build_engine`
        keeps only the tokenizer's special ones.
        """
        is_eog, vocab = self._ll.llama_vocab_is_eog, self._vocab
        return frozenset(t for t in range(self.n_vocab) if is_eog(vocab, t))

    def metadata(self, key: str) -> str | None:
        """A GGUF metadata value as a string (``general.name``, ``qwen3.context_length``…)."""
        buf = ctypes.create_string_buffer(1 << 16)
        n = self._ll.llama_model_meta_val_str(self._model, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", "replace") if n >= 0 else None

    def tokenize(self, text: str) -> list[int]:
        """llama.cpp's own tokenization of ``text`` (special tokens parsed, no BOS added);
        the server tokenizes with Hugging Face, this is how to check they agree."""
        data = text.encode()
        capacity = len(data) + 8
        out = (self._ll.llama_token * capacity)()
        n = self._ll.llama_tokenize(self._vocab, data, len(data), out, capacity, False, True)
        if n < 0:
            raise RuntimeError(f"llama_tokenize needs {-n} slots")
        return list(out[:n])

    def can_trim_sequences(self) -> bool:
        """Whether a sequence's KV can be cut at any position (not so for recurrent and
        hybrid models, whose state is not per position): prefix caching needs it."""
        ll = self._ll
        return not (
            ll.llama_model_is_recurrent(self._model) or ll.llama_model_is_hybrid(self._model)
        )

    def release(self, seq_ids: Iterable[int]) -> None:
        """Forget the KV cache of sequences that left the batch."""
        for seq_id in seq_ids:
            self._ll.llama_memory_seq_rm(self._memory, seq_id, -1, -1)

    def apply(self, ops: Iterable[MemoryOp]) -> None:
        """Make a plan's KV changes, in order (see :class:`StepPlan.memory`)."""
        ll, memory = self._ll, self._memory
        for op in ops:
            if isinstance(op, MoveSequence):
                # Across KV streams a copy moves the source stream's whole buffer (queued
                # by llama.cpp, done in order at the next decode); clearing is metadata.
                ll.llama_memory_seq_cp(memory, op.src, op.dst, -1, -1)
                ll.llama_memory_seq_rm(memory, op.src, -1, -1)
                continue
            if isinstance(op, CopyPrefix):
                # Whole-sequence copy (across KV streams llama.cpp copies nothing less),
                # then cut it back to the matched prefix.
                ll.llama_memory_seq_cp(memory, op.src, op.dst, -1, -1)
                seq_id, keep = op.dst, op.length
            else:
                seq_id, keep = op.seq_id, op.length
            if not ll.llama_memory_seq_rm(memory, seq_id, keep, -1):
                raise RuntimeError(f"llama.cpp could not cut sequence {seq_id} at {keep}")

    def cached_positions(self, seq_id: int) -> int:
        """How many positions ``seq_id`` holds in the KV cache (0 when empty)."""
        return int(self._ll.llama_memory_seq_pos_max(self._memory, seq_id)) + 1

    def decode(self, tokens: Sequence[BatchToken]) -> None:
        """Run the model over one batch; logits exist afterwards for entries that asked."""
        if len(tokens) > self.max_batch_tokens:
            raise ValueError(
                f"batch of {len(tokens)} tokens exceeds n_batch {self.max_batch_tokens}"
            )
        batch = self._batch
        for i, entry in enumerate(tokens):
            batch.token[i] = entry.token_id
            batch.pos[i] = entry.position
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = entry.seq_id
            batch.logits[i] = 1 if entry.wants_logits else 0
        batch.n_tokens = len(tokens)
        status = self._ll.llama_decode(self._ctx, batch)
        if status != 0:
            raise RuntimeError(f"llama_decode failed with status {status}")

    def logits(self, batch_index: int) -> torch.Tensor:
        """A copy of the logits row of batch entry ``batch_index`` from the last decode."""
        ptr = self._ll.llama_get_logits_ith(self._ctx, batch_index)
        if not ptr:
            raise RuntimeError(f"no logits for batch entry {batch_index}")
        row = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))
        return torch.from_numpy(row.copy())

    def close(self) -> None:
        """Free the batch, context and model (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._ll.llama_batch_free(self._batch)
        self._ll.llama_free(self._ctx)
        self._ll.llama_model_free(self._model)
