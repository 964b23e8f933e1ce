"""OpenAI's logprobs shapes, built from the engine's per-token events."""

from __future__ import annotations

from collections.abc import Sequence

from aiforge.engines.core import TokenEvent
from aiforge.engines.server.detokenizer import TokenTexts
from aiforge.protocol.openai.chat import TokenLogprob, TopLogprob
from aiforge.protocol.openai.completions import CompletionLogprobs


def chat_logprobs(events: Sequence[TokenEvent], texts: TokenTexts, top: int) -> list[TokenLogprob]:
    """Chat's ``logprobs.content`` entries (``top`` alternatives each)."""
    entries = []
    for event in events:
        if event.logprob is None:
            continue
        token, raw = texts.get(event.token_id)
        alternatives = []
        for token_id, logprob in event.top_logprobs[:top]:
            alt_token, alt_raw = texts.get(token_id)
            alternatives.append(TopLogprob(token=alt_token, logprob=logprob, bytes=alt_raw))
        entries.append(
            TokenLogprob(token=token, logprob=event.logprob, bytes=raw, top_logprobs=alternatives)
        )
    return entries


def completion_logprobs(
    events: Sequence[TokenEvent], texts: TokenTexts, top: int, text_offset: int
) -> CompletionLogprobs:
    """Completions' column-wise logprobs; offsets count from ``text_offset``."""
    result = CompletionLogprobs(tokens=[], token_logprobs=[], top_logprobs=[], text_offset=[])
    offset = text_offset
    for event in events:
        token, _ = texts.get(event.token_id)
        result.tokens.append(token)
        result.token_logprobs.append(event.logprob)
        result.text_offset.append(offset)
        offset += len(token)
        if top > 0:
            result.top_logprobs.append(
                {texts.get(token_id)[0]: lp for token_id, lp in event.top_logprobs[:top]}
            )
        else:
            result.top_logprobs.append(None)
    return result
