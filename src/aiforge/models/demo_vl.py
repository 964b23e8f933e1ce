"""The offline vision demo model: a tiny Qwen3-VL with random weights, built here in seconds.

``aiforge serve --model demo-vl`` takes images (``image_url`` content parts) on a machine
with no network: the demo tokenizer (:mod:`aiforge.models.demo_tokenizer`, which already
holds Qwen-VL's ``<|vision_start|>``, ``<|image_pad|>`` and ``<|vision_end|>``) with a chat
template that renders image parts as Qwen3-VL's does, a ``Qwen3VLForConditionalGeneration``
of random weights (a tiny vision tower with deepstack layers, a tiny text decoder with
multimodal rotary positions) and Qwen-VL's image preprocessor (16-pixel patches merged 2×2:
one prompt token per 32×32 pixels). Its output is random text; ``aiforge_demo`` in its
``config.json`` says so, as :mod:`aiforge.models.demo` does for ``demo``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aiforge.config import Settings
from aiforge.models.demo import DEMO_CONFIG_FLAG, DEMO_SHAPE
from aiforge.models.demo_build import build_once, special_token_ids
from aiforge.models.demo_template import QWEN3_CHAT_TEMPLATE
from aiforge.models.demo_tokenizer import build_demo_tokenizer

DEMO_VL_NAME = "demo-vl"
DEMO_VL_VERSION = 1
"""Bump when the tokenizer, template, preprocessor or shape changes: a new one is built."""

VISION_SHAPE: dict[str, Any] = {
    "depth": 2,
    "hidden_size": 64,
    "num_heads": 2,
    "intermediate_size": 128,
    "patch_size": 16,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "num_position_embeddings": 256,
    "deepstack_visual_indexes": [0, 1],
}
"""A two-block vision tower whose both blocks feed deepstack features to the decoder."""

IMAGE_MIN_PIXELS = 32 * 32 * 4
IMAGE_MAX_PIXELS = 512 * 512
"""The preprocessor resizes every image into this range: 4 to 256 prompt tokens."""

_VISION_PART = "<|vision_start|><|image_pad|><|vision_end|>"

# Renders a message's content: a string as is, a list of parts in order, each image (an
# ``image`` or ``image_url`` part, as Qwen3-VL's template takes them) as its vision markers.
_RENDER_CONTENT = (
    "{%- macro render_content(content) -%}"
    "{%- if content is string -%}{{- content -}}"
    "{%- else -%}{%- for part in content -%}"
    "{%- if part.type == 'image' or part.type == 'image_url' -%}{{- '" + _VISION_PART + "' -}}"
    "{%- elif part.type == 'text' -%}{{- part.text -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- endmacro -%}"
)

QWEN3_VL_CHAT_TEMPLATE = _RENDER_CONTENT + QWEN3_CHAT_TEMPLATE.replace(
    "message.content", "render_content(message.content)"
)
"""Qwen3's prompt format (tools, thinking) with image parts rendered as in Qwen3-VL."""

_MODEL_CARD = """\
# aiforge vision demo model (random weights)

A tiny Qwen3-VL-architecture model with **random weights**, the aiforge demo tokenizer
(with Qwen-VL's vision tokens) and Qwen-VL's image preprocessor, built on this machine by
`aiforge` without any network access. It takes images and produces **random text**: it
exists so that `aiforge serve --model demo-vl` exercises image input offline.
"""


def demo_vl_model_dir(settings: Settings) -> Path:
    """Where the vision demo model lives once built (nothing is created)."""
    return settings.models_dir / f"aiforge-demo-vl-v{DEMO_VL_VERSION}"


def ensure_demo_vl_model(settings: Settings) -> Path:
    """Return the vision demo model's directory, building it first if needed (safe across
    processes: see :func:`~aiforge.models.demo_build.build_once`)."""
    return build_once(demo_vl_model_dir(settings), build_demo_vl)


def build_demo_vl(out_dir: Path, *, seed: int = 0) -> Path:
    """Write the tiny Qwen3-VL (weights, tokenizer, preprocessor, card) into ``out_dir``."""
    import torch
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    vocab_size = build_demo_tokenizer(out_dir)
    _use_vl_template(out_dir)
    ids = special_token_ids(out_dir)
    head_dim = int(DEMO_SHAPE["head_dim"])
    text = {
        **DEMO_SHAPE,
        "vocab_size": vocab_size,
        "rms_norm_eps": 1e-6,
        "hidden_act": "silu",
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 5_000_000.0,
            # Frequencies for (time, height, width): Qwen3-VL's 24/20/20 split of 64, scaled.
            "mrope_section": _mrope_section(head_dim // 2),
            "mrope_interleaved": True,
        },
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }
    vision = {**VISION_SHAPE, "out_hidden_size": DEMO_SHAPE["hidden_size"]}
    config = Qwen3VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    setattr(config, DEMO_CONFIG_FLAG, True)
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(config)  # float32, torch's default dtype
    model.save_pretrained(out_dir)
    _write_preprocessor(out_dir)
    _write_generation_config(out_dir, ids)
    (out_dir / "README.md").write_text(_MODEL_CARD)
    return out_dir


def _mrope_section(frequencies: int) -> list[int]:
    """Split ``frequencies`` rotary frequencies over (t, h, w) in Qwen3-VL's 24:20:20 ratio."""
    height = width = frequencies * 20 // 64
    return [frequencies - height - width, height, width]


def _use_vl_template(tokenizer_dir: Path) -> None:
    path = tokenizer_dir / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config["chat_template"] = QWEN3_VL_CHAT_TEMPLATE
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False))


def _write_preprocessor(out_dir: Path) -> None:
    """Qwen-VL's image preprocessor settings (as Qwen3-VL checkpoints ship them)."""
    config = {
        "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": "Qwen3VLProcessor",
        "do_resize": True,
        "do_rescale": True,
        "do_normalize": True,
        "do_convert_rgb": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "patch_size": VISION_SHAPE["patch_size"],
        "merge_size": VISION_SHAPE["spatial_merge_size"],
        "temporal_patch_size": VISION_SHAPE["temporal_patch_size"],
        "size": {"shortest_edge": IMAGE_MIN_PIXELS, "longest_edge": IMAGE_MAX_PIXELS},
    }
    (out_dir / "preprocessor_config.json").write_text(json.dumps(config, indent=2))


def _write_generation_config(model_dir: Path, ids: dict[str, int]) -> None:
    config = {
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]],
        "pad_token_id": ids["<|endoftext|>"],
        "do_sample": True,
        "temperature": 0.7,
        "top_p": 0.8,
        "top_k": 20,
    }
    (model_dir / "generation_config.json").write_text(json.dumps(config, indent=2))
