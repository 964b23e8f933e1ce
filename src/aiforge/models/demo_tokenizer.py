"""A small byte-level BPE tokenizer built the way Qwen's is, trained here, with no network.

Same normalizer (NFC), pre-tokenizer regex and byte-level alphabet as Qwen3's tokenizer,
Qwen's added tokens (ChatML markers, ``<think>``, ``<tool_call>``, …) with Qwen's
``special`` flags, and a few thousand merges learnt from text generated below. Saved as a
Hugging Face fast tokenizer with the Qwen3 chat template, so ``AutoTokenizer`` loads it.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Iterator
from pathlib import Path

from aiforge.models.demo_template import QWEN3_CHAT_TEMPLATE

QWEN_PRETOKENIZE_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Qwen3's added tokens in id order, with its `special` flag: special ones are dropped by
# `skip_special_tokens`; the others (tool calls, thinking) stay visible in decoded text.
QWEN_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
)

DEMO_VOCAB_SIZE = 2048
"""Target size of the learnt vocabulary (256 bytes + merges), before the added tokens."""

_SUBJECTS = ("the model", "a replica", "the gateway", "our service", "each request", "the cluster")
_VERBS = ("serves", "streams", "answers", "routes", "meters", "schedules", "tokenizes", "caches")
_OBJECTS = (
    "tokens", "chat completions", "embeddings", "tool calls", "the weather in Paris",
    "a JSON object", "long prompts", "every user", "numbers like 3.14 and 42",
)  # fmt: skip
_SNIPPETS = (
    'def add(a: int, b: int) -> int:\n    return a + b\n',
    '{"name": "get_weather", "arguments": {"city": "Berlin", "unit": "celsius"}}',
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n",
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n",
    "<|im_start|>assistant\n<think>\nThe user asks a question.\n</think>\n\nParis.<|im_end|>\n",
    "<tool_call>\n{\"name\": \"search\", \"arguments\": {\"query\": \"qwen\"}}\n</tool_call>",
    "<tool_response>\n{\"temperature\": 21}\n</tool_response>",
    "Hello! How can I help you today? I'm fine, thanks; you're welcome.",
    "Bonjour, ça va? Hallo, wie geht's? 你好，世界。こんにちは。",
)  # fmt: skip


_WORD_LIST = (
    "about after again all also always and answer any are ask back because been before best "
    "between both build call can change city code come could data day different does down "
    "each early end even every example fast file find first for from function give good great "
    "have help here high how image important into just keep know language large last learn "
    "let like line list little long look make many memory model more most much must name need "
    "never new next number off old only open other over part people place point problem "
    "question quickly read really result right same say search second see server should show "
    "small some something start still system take tell than that the their them then there "
    "these thing think this those through time today together tool try turn under until use "
    "value very want water way weather well what when where which while who why will with "
    "word work world would write year you your"
)
_WORDS = _WORD_LIST.split()


def training_text() -> Iterator[str]:
    """Deterministic, varied text: prose, code, JSON, chat markup, several scripts."""
    for subject, verb, obj in itertools.product(_SUBJECTS, _VERBS, _OBJECTS):
        yield f"{subject.capitalize()} {verb} {obj}. Then {subject} {verb} more {obj}!"
    rng = random.Random(0)  # fixed seed: the same tokenizer on every machine
    for _ in range(400):
        words = rng.sample(_WORDS, 12)
        yield " ".join(words).capitalize() + rng.choice((".", "?", "!", ",")) + "\n"
    for i, snippet in enumerate(_SNIPPETS * 8):
        yield f"{snippet}\n# example {i}: {i * 17 % 1000} items, {i / 7:.3f} seconds"


def build_demo_tokenizer(out_dir: Path, *, vocab_size: int = DEMO_VOCAB_SIZE) -> int:
    """Train the tokenizer and save it (tokenizer.json + config) to ``out_dir``.

    Returns the full vocabulary size, added tokens included: the model's embedding rows.
    """
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        trainers,
    )

    tokenizer = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()  # decoding ignores the prefix-space options
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(training_text(), trainer=trainer)
    tokenizer.add_tokens(
        [AddedToken(text, special=special, normalized=False) for text, special in QWEN_ADDED_TOKENS]
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    _write_tokenizer_config(out_dir, tokenizer)
    return int(tokenizer.get_vocab_size(with_added_tokens=True))


def _write_tokenizer_config(out_dir: Path, tokenizer: object) -> None:
    from tokenizers import Tokenizer

    assert isinstance(tokenizer, Tokenizer)
    decoder = {
        str(tokenizer.token_to_id(text)): {
            "content": text, "lstrip": False, "normalized": False, "rstrip": False,
            "single_word": False, "special": special,
        }
        for text, special in QWEN_ADDED_TOKENS
    }  # fmt: skip
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "added_tokens_decoder": decoder,
        "additional_special_tokens": [text for text, special in QWEN_ADDED_TOKENS if special][1:],
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "add_bos_token": False,
        "clean_up_tokenization_spaces": False,
        "split_special_tokens": False,
        "model_max_length": 32768,
        "errors": "replace",
        "chat_template": QWEN3_CHAT_TEMPLATE,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))
    special_map = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2))
