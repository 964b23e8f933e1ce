"""Images in the transformers engine: Qwen-VL-shaped models (Qwen2.5-VL's and Qwen3-VL's).

Two parts. :class:`QwenVLImages` is what the replica server calls (the engine's ``vision``):
it turns decoded images into patches with the model's own preprocessor and says how many
placeholder tokens each image takes. :class:`VisionPrefill` is what the model runner calls:
when a request with images joins, the vision tower encodes them once
(:meth:`VisionPrefill.add`); each forward pass then gets, per row, the prompt's embeddings
with the image features in place of the placeholders, the deepstack features the first
decoder layers add at those places, and the model's multimodal rotary positions
(time/height/width per image token; text tokens on one line after them, shifted by the
request's ``rope delta`` for every decoded token).

Positions passed to the decoder are ``[4, batch, width]``: row 0 the cache position (what
the attention mask and the KV cache index), rows 1–3 the rotary (t, h, w) positions. A
request without images has all four equal, so text-only requests batch with image ones.

Called only from the engine loop's thread (:class:`VisionPrefill`) or a worker thread
(:class:`QwenVLImages`, stateless); neither holds a lock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from aiforge.engines.core import GenerationRequest, ImageInputs

__all__ = ["QwenVLImages", "VisionPrefill", "is_vision_config"]


def is_vision_config(config: Any) -> bool:
    """Whether a model config is a Qwen-VL-shaped vision-language model."""
    return getattr(config, "vision_config", None) is not None and hasattr(config, "image_token_id")


class QwenVLImages:
    """The model's image preprocessor (Qwen-VL's: patches of ``patch_size`` pixels, merged
    ``merge_size``² into one token), loaded from the model directory's
    ``preprocessor_config.json``; Pillow-based, so it needs no torchvision."""

    def __init__(self, processor: Any, image_token_id: int) -> None:
        self._processor = processor
        self._image_token_id = image_token_id
        self._merge = int(getattr(processor, "merge_size", 2) or 2)

    @classmethod
    def from_pretrained(cls, model_dir: Path, image_token_id: int) -> QwenVLImages:
        from transformers import AutoImageProcessor

        processor = AutoImageProcessor.from_pretrained(model_dir, backend="pil")  # type: ignore[no-untyped-call]
        return cls(processor, image_token_id)

    @property
    def image_token_id(self) -> int:
        return self._image_token_id

    def preprocess(self, images: Sequence[Any]) -> ImageInputs:
        """Patches and grids of ``images`` (PIL images, already within the server's limits)."""
        out = self._processor(images=list(images), return_tensors="pt")
        grid = out["image_grid_thw"].to(torch.long)
        tokens = (grid.prod(-1) // (self._merge**2)).tolist()
        return ImageInputs(out["pixel_values"], grid, tuple(int(t) for t in tokens))


@dataclass(slots=True)
class _EncodedPrompt:
    """One request's images, encoded once, and its rotary positions."""

    image_mask: torch.Tensor
    """``[prompt_len]`` bool: where the prompt's image tokens are."""
    image_offsets: torch.Tensor
    """``[prompt_len + 1]``: image tokens before each position (cumulative count)."""
    features: torch.Tensor
    """``[image_tokens, hidden]``: what replaces the placeholders, in prompt order."""
    deepstack: list[torch.Tensor]
    """Per deepstack layer, ``[image_tokens, hidden]`` added after that decoder layer."""
    rope: torch.Tensor
    """``[3, prompt_len]``: (t, h, w) rotary positions of the prompt."""
    rope_delta: int
    """Rotary position minus cache position for every token after the prompt."""


class VisionPrefill:
    """Per-request vision state and the decoder inputs built from it, for one VL model."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self._vl = model.model
        """The ``Qwen3VLModel``: vision tower, text decoder, rotary index."""
        self.decoder: Any = self._vl.language_model
        self._embed = self._vl.get_input_embeddings()
        self._image_token_id = int(model.config.image_token_id)
        self._prompts: dict[str, _EncodedPrompt] = {}

    def add(self, request: GenerationRequest) -> None:
        """Encode the request's images (if any) before its first prefill chunk.

        Raises ``ValueError`` when the prompt's placeholders do not match the images."""
        if request.images is None:
            return
        images = request.images
        ids = torch.tensor(request.prompt_token_ids, dtype=torch.long)
        mask = ids == self._image_token_id
        if int(mask.sum()) != sum(images.tokens_per_image):
            raise ValueError(
                f"the prompt has {int(mask.sum())} image tokens; its images need "
                f"{sum(images.tokens_per_image)}"
            )
        out = self._vl.get_image_features(images.pixel_values, images.grid_thw, return_dict=True)
        dtype = self._embed.weight.dtype
        features = torch.cat(out.pooler_output).to(dtype)
        deepstack = [torch.cat(layer).to(dtype) for layer in out.deepstack_features]
        rope, delta = self._vl.get_rope_index(
            ids[None], mask.to(torch.int)[None], image_grid_thw=images.grid_thw
        )
        offsets = torch.zeros(len(ids) + 1, dtype=torch.long)
        offsets[1:] = torch.cumsum(mask.to(torch.long), 0)
        self._prompts[request.request_id] = _EncodedPrompt(
            mask, offsets, features, deepstack, rope[:, 0], int(delta.reshape(-1)[0])
        )

    def drop(self, request_id: str) -> None:
        self._prompts.pop(request_id, None)

    def prefill_inputs(
        self,
        request_ids: Sequence[str],
        starts: Sequence[int],
        lengths: Sequence[int],
        input_ids: torch.Tensor,
        positions: torch.Tensor,
    ) -> dict[str, Any]:
        """Decoder keyword arguments for right-padded prefill rows (``input_ids`` and
        ``positions`` are ``[rows, width]``): embeddings with image features in place, the
        deepstack features and mask, and ``[4, rows, width]`` positions."""
        rope = positions[None].expand(3, -1, -1).clone()
        visual = torch.zeros(input_ids.shape, dtype=torch.bool)
        spans: list[tuple[_EncodedPrompt, int, int]] = []
        for row, (rid, start, length) in enumerate(zip(request_ids, starts, lengths, strict=True)):
            prompt = self._prompts.get(rid)
            if prompt is None:
                continue
            end = start + length
            rope[:, row, :length] = prompt.rope[:, start:end]
            visual[row, :length] = prompt.image_mask[start:end]
            first, last = int(prompt.image_offsets[start]), int(prompt.image_offsets[end])
            if last > first:
                spans.append((prompt, first, last))
        kwargs: dict[str, Any] = {"position_ids": torch.cat([positions[None], rope])}
        if not spans:
            kwargs["input_ids"] = input_ids
            return kwargs
        embeds = self._embed(input_ids)
        # Boolean indexing is row-major, as the spans were collected: row by row, in order.
        embeds[visual] = torch.cat([p.features[a:b] for p, a, b in spans])
        kwargs["inputs_embeds"] = embeds
        kwargs["visual_pos_masks"] = visual
        kwargs["deepstack_visual_embeds"] = [
            torch.cat([p.deepstack[layer][a:b] for p, a, b in spans])
            for layer in range(len(spans[0][0].deepstack))
        ]
        return kwargs

    def decode_positions(self, request_ids: Sequence[str], positions: torch.Tensor) -> torch.Tensor:
        """``[4, rows, 1]`` positions of one decoded token per row (``positions``: ``[rows]``)."""
        deltas = torch.tensor(
            [self._prompts[r].rope_delta if r in self._prompts else 0 for r in request_ids],
            dtype=torch.long,
        )
        rope = (positions + deltas)[None].expand(3, -1)
        return torch.cat([positions[None], rope])[:, :, None]
