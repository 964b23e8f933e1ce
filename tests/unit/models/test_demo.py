"""The offline demo model: its tokenizer, its Qwen3 template, and the built model."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from aiforge.config import Settings
from aiforge.models.demo import (
    DEMO_CONFIG_FLAG,
    demo_model_dir,
    ensure_demo_model,
    is_demo_model,
)
from aiforge.models.demo_template import QWEN3_CHAT_TEMPLATE
from aiforge.models.demo_tokenizer import QWEN_ADDED_TOKENS, build_demo_tokenizer
from aiforge.testing.models import qwen3_tokenizer_dir

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
CALL = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
CALL_STR = {"function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}

CONVERSATIONS: list[list[dict[str, Any]]] = [
    [{"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "", "tool_calls": [CALL, CALL_STR]},
        {"role": "tool", "content": '{"temp": 21}'},
        {"role": "tool", "content": '{"temp": 25}'},
    ],
    [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "<think>\nadd\n</think>\n\n4"},
        {"role": "user", "content": "and 3+3?"},
        {"role": "assistant", "content": "6", "reasoning_content": "add again"},
    ],
    [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "Calling.", "tool_calls": [CALL]},
        {"role": "tool", "content": "ok"},
        {"role": "system", "content": "late system"},
    ],
]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo-tokenizer")
    build_demo_tokenizer(out)
    return out


@pytest.fixture(scope="module")
def demo_tokenizer(tokenizer_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir)


@pytest.mark.parametrize("conversation", CONVERSATIONS)
@pytest.mark.parametrize("thinking", [None, True, False])
@pytest.mark.parametrize("with_tools", [False, True])
def test_template_renders_exactly_what_qwen3s_renders(
    demo_tokenizer: Any, conversation: list[dict[str, Any]], thinking: bool | None, with_tools: bool
) -> None:
    official = json.loads((qwen3_tokenizer_dir() / "tokenizer_config.json").read_text())
    kwargs: dict[str, Any] = {"tokenize": False, "add_generation_prompt": True}
    if thinking is not None:
        kwargs["enable_thinking"] = thinking
    if with_tools:
        kwargs["tools"] = TOOLS
    ours = demo_tokenizer.apply_chat_template(
        conversation, chat_template=QWEN3_CHAT_TEMPLATE, **kwargs
    )
    theirs = demo_tokenizer.apply_chat_template(
        conversation, chat_template=official["chat_template"], **kwargs
    )
    assert ours == theirs
    assert demo_tokenizer.apply_chat_template(conversation, **kwargs) == ours


def test_tokenizer_has_qwens_added_tokens_as_single_ids(demo_tokenizer: Any) -> None:
    for text, _special in QWEN_ADDED_TOKENS:
        ids = demo_tokenizer.encode(text, add_special_tokens=False)
        assert len(ids) == 1, text
        assert demo_tokenizer.decode(ids) == text
    assert demo_tokenizer.eos_token == "<|im_end|>"
    assert demo_tokenizer.pad_token == "<|endoftext|>"


def test_tokenizer_is_byte_level_lossless_and_skips_only_qwens_special_tokens(
    demo_tokenizer: Any,
) -> None:
    text = "Hello, wörld! 你好 🙂 def f(x):\n\treturn {'a': 1}"
    assert demo_tokenizer.decode(demo_tokenizer.encode(text, add_special_tokens=False)) == text
    marked = "<|im_start|>assistant\n<think>\nhm\n</think>\n\n<tool_call>{}</tool_call><|im_end|>"
    ids = demo_tokenizer.encode(marked, add_special_tokens=False)
    # Like Qwen3: ChatML markers are special, thinking and tool-call tags are not.
    assert demo_tokenizer.decode(ids, skip_special_tokens=True) == (
        "assistant\n<think>\nhm\n</think>\n\n<tool_call>{}</tool_call>"
    )
    assert 1000 <= len(demo_tokenizer) <= 4096


def test_tokenizer_is_deterministic(tokenizer_dir: Path, tmp_path: Path) -> None:
    build_demo_tokenizer(tmp_path)
    assert (tmp_path / "tokenizer.json").read_text() == (
        tokenizer_dir / "tokenizer.json"
    ).read_text()


@pytest.mark.slow
def test_demo_model_builds_once_loads_and_generates(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    settings = Settings(cache_dir=tmp_path / "cache", data_dir=tmp_path / "data")
    start = time.monotonic()
    path = ensure_demo_model(settings)
    assert time.monotonic() - start < 60
    assert path == demo_model_dir(settings)
    assert is_demo_model(path)
    config = json.loads((path / "config.json").read_text())
    assert config[DEMO_CONFIG_FLAG] is True
    assert config["architectures"] == ["Qwen3ForCausalLM"]
    assert "RANDOM" in (path / "README.md").read_text().upper()
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert ensure_demo_model(settings) == path
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp  # cached, not rebuilt
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".demo-build-")]

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.config.vocab_size == len(tokenizer)
    generation = json.loads((path / "generation_config.json").read_text())
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in generation["eos_token_id"]
    prompt: Any = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, return_dict=True,
        return_tensors="pt",
    )  # fmt: skip
    out = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert out.shape[1] == prompt["input_ids"].shape[1] + 8 or tokenizer.eos_token_id in out[0]


def test_is_demo_model_rejects_other_dirs(tmp_path: Path) -> None:
    assert not is_demo_model(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "qwen3"}')
    assert not is_demo_model(tmp_path)
    (tmp_path / "config.json").write_text("not json")
    assert not is_demo_model(tmp_path)
