"""What every endpoint handler of a replica shares: the engine, its tokenizer, settings."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field

from transformers import PreTrainedTokenizerBase

from aiforge.engines.core import TokenEngine
from aiforge.engines.server.detokenizer import TokenTexts
from aiforge.engines.server.grammar import GrammarCompilerCache
from aiforge.engines.server.limits import RequestLimits
from aiforge.engines.server.metrics import ReplicaMetrics
from aiforge.engines.server.params import SamplingDefaults
from aiforge.engines.server.templates import ChatTemplates, RenderLimits
from aiforge.protocol.openai.errors import model_not_found


@dataclass(slots=True)
class ReplicaContext:
    engine: TokenEngine
    tokenizer: PreTrainedTokenizerBase
    served_model_name: str
    max_model_len: int
    metrics: ReplicaMetrics
    defaults: SamplingDefaults = field(default_factory=SamplingDefaults)
    limits: RequestLimits = field(default_factory=RequestLimits)
    created: int = field(default_factory=lambda: int(time.time()))
    token_texts: TokenTexts = field(init=False)
    templates: ChatTemplates = field(init=False)
    _grammars: GrammarCompilerCache | None = field(init=False, default=None)
    _grammar_lock: threading.Lock = field(init=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.token_texts = TokenTexts(self.tokenizer)
        render = RenderLimits(
            timeout_s=self.limits.chat_template_timeout_s,
            # The prompt's text plus room for the template's own and the tools' text.
            max_output_chars=2 * self.limits.max_prompt_chars + (1 << 16),
        )
        self.templates = ChatTemplates(self.tokenizer, render)
        # aiforge's own engines count prefix-cache hits; other TokenEngines need not.
        prefix_cache_stats = getattr(self.engine, "prefix_cache_stats", None)
        if callable(prefix_cache_stats):
            self.metrics.watch_prefix_cache(prefix_cache_stats)

    def check_model(self, model: str) -> None:
        if model != self.served_model_name:
            raise model_not_found(model)

    def grammars(self) -> GrammarCompilerCache:
        """Built on first use (indexing the vocabulary takes a moment); thread-safe."""
        with self._grammar_lock:
            if self._grammars is None:
                info = self.engine.info
                self._grammars = GrammarCompilerCache(
                    self.tokenizer,
                    vocab_size=info.vocab_size,
                    stop_token_ids=sorted(info.eos_token_ids),
                )
            return self._grammars

    def token_id(self, text: str) -> int | None:
        """The id of a single-token marker such as ``<think>``, or None if not one token."""
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        return int(ids[0]) if len(ids) == 1 else None


def request_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"
