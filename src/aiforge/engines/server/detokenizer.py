"""Turning sampled token ids into text, one token at a time."""

from __future__ import annotations

from functools import lru_cache

from transformers import PreTrainedTokenizerBase

_REPLACEMENT = "\ufffd"


class IncrementalDetokenizer:
    """Text deltas for a growing token sequence.

    Decodes a short window of recent tokens so the cost per token stays constant, and
    holds back text that ends in an incomplete UTF-8 sequence (a multi-byte character
    split across tokens) until the next token completes it. Special tokens (EOS) are
    skipped; Qwen's ``<think>``/``<tool_call>`` tokens are not special and come through
    as text for the parsers.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0

    def _decode(self, ids: list[int]) -> str:
        return str(self._tokenizer.decode(ids, skip_special_tokens=True))

    def push(self, token_id: int) -> str:
        """Append one token; return the text it completes (possibly empty)."""
        self._ids.append(token_id)
        prefix_text = self._decode(self._ids[self._prefix_offset : self._read_offset])
        new_text = self._decode(self._ids[self._prefix_offset :])
        if len(new_text) > len(prefix_text) and not new_text.endswith(_REPLACEMENT):
            self._prefix_offset = self._read_offset
            self._read_offset = len(self._ids)
            return new_text[len(prefix_text) :]
        return ""

    def flush(self) -> str:
        """Text still held back at the end of the sequence (even if malformed)."""
        prefix_text = self._decode(self._ids[self._prefix_offset : self._read_offset])
        new_text = self._decode(self._ids[self._prefix_offset :])
        self._prefix_offset = self._read_offset = len(self._ids)
        return new_text[len(prefix_text) :]


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """The inverse of GPT-2's byte-to-unicode table used by byte-level BPE vocabularies."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, codes, strict=True)}


class TokenTexts:
    """Per-token text and UTF-8 bytes, as OpenAI's logprobs report them."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self._tokenizer = tokenizer
        self._added = {int(i): t.content for i, t in tokenizer.added_tokens_decoder.items()}
        self._cache: dict[int, tuple[str, list[int]]] = {}

    def get(self, token_id: int) -> tuple[str, list[int]]:
        """``(text, bytes)``; the text may hold U+FFFD for a partial UTF-8 character."""
        cached = self._cache.get(token_id)
        if cached is None:
            cached = self._compute(token_id)
            self._cache[token_id] = cached
        return cached

    def _compute(self, token_id: int) -> tuple[str, list[int]]:
        if token_id in self._added:
            raw = self._added[token_id].encode()
            return self._added[token_id], list(raw)
        piece = self._tokenizer.convert_ids_to_tokens(token_id)
        table = _byte_decoder()
        if isinstance(piece, str) and piece and all(ch in table for ch in piece):
            raw = bytes(table[ch] for ch in piece)
        else:
            raw = str(self._tokenizer.decode([token_id])).encode()
        return raw.decode("utf-8", errors="replace"), list(raw)
