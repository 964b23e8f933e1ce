"""Images in chat requests: find the ``image_url`` parts, decode them, expand their tokens.

A replica takes images only as ``data:`` URLs (base64 PNG, JPEG, WebP or GIF): the gateway
fetches http(s) URLs once, with its address and size checks, and inlines them
(:mod:`aiforge.gateway.images`). Decoding is bounded before any pixel is read: the base64
text by :attr:`RequestLimits.image_max_bytes`, the image's width x height (from its header)
by :attr:`RequestLimits.image_max_pixels`, so a decompression bomb is refused unopened.
Every refusal is a 400 naming the part (``messages[0].content[1].image_url.url``).

The chat template puts one placeholder token per image; :func:`expand_image_tokens` makes
it the number of tokens the model's preprocessor gives that image, so those tokens are in
the prompt's count, its ``usage`` and the context check like any other.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiforge.engines.core import ImageInputs, ImagePreprocessor
from aiforge.engines.server.limits import RequestLimits
from aiforge.protocol.openai.chat import ChatMessage, ImageContentPart
from aiforge.protocol.openai.errors import OpenAIError, invalid_param

__all__ = [
    "IMAGE_MEDIA_TYPES",
    "ImagePart",
    "PromptImages",
    "decode_data_url",
    "engine_vision",
    "expand_image_tokens",
    "image_parts",
    "load_images",
    "request_images",
    "template_content",
]

IMAGE_MEDIA_TYPES = {
    "image/png": "PNG",
    "image/jpeg": "JPEG",
    "image/jpg": "JPEG",
    "image/webp": "WEBP",
    "image/gif": "GIF",
}
"""Media types a data URL may declare, and the one Pillow format each may hold."""
MAX_ASPECT_RATIO = 200
"""Qwen-VL's preprocessor refuses longer or thinner images (as its ``smart_resize`` does)."""


@dataclass(frozen=True, slots=True)
class ImagePart:
    """One ``image_url`` content part, with the path that names it in errors."""

    param: str
    url: str


@dataclass(frozen=True, slots=True)
class PromptImages:
    """A chat request's images, decoded and preprocessed, and how they enter its prompt."""

    parts: tuple[ImagePart, ...] = ()
    inputs: ImageInputs | None = None
    image_token_id: int | None = None

    def expand(self, ids: list[int], limits: RequestLimits) -> list[int]:
        """The prompt's ids with each image's tokens in place (``ids`` when no images),
        checked against the per-prompt token limit again."""
        if self.inputs is None or self.image_token_id is None:
            return ids
        expanded = expand_image_tokens(ids, self.image_token_id, self.inputs, self.parts)
        limits.check_prompt_tokens(len(expanded), "messages")
        return expanded


def engine_vision(engine: object) -> ImagePreprocessor | None:
    """The engine's image preprocessor, or None when it takes no images."""
    vision = getattr(engine, "vision", None)
    return vision if isinstance(vision, ImagePreprocessor) else None


def request_images(
    engine: object, messages: Sequence[ChatMessage], limits: RequestLimits, model: str
) -> PromptImages:
    """Find, decode and preprocess a chat request's images (blocking: a worker thread)."""
    parts = image_parts(messages)
    vision = engine_vision(engine)
    inputs = load_images(parts, vision, limits, model)
    if inputs is None or vision is None:
        return PromptImages()
    return PromptImages(tuple(parts), inputs, vision.image_token_id)


def template_content(message: ChatMessage) -> str | list[dict[str, Any]]:
    """A message's content as chat templates take it: text, or, when it holds images, its
    parts in order (``{"type": "image"}`` for each image, as Qwen-VL templates expect)."""
    content = message.content
    if not isinstance(content, list) or not any(isinstance(p, ImageContentPart) for p in content):
        return message.text() or ""
    return [
        {"type": "image"} if isinstance(p, ImageContentPart) else {"type": "text", "text": p.text}
        for p in content
    ]


def image_parts(messages: Sequence[ChatMessage]) -> list[ImagePart]:
    """Every image part, in prompt order. Images belong in user messages (as in OpenAI's
    API): one in another role is a 400."""
    parts = []
    for i, message in enumerate(messages):
        if not isinstance(message.content, list):
            continue
        for j, part in enumerate(message.content):
            if not isinstance(part, ImageContentPart):
                continue
            param = f"messages[{i}].content[{j}].image_url.url"
            if message.role != "user":
                raise invalid_param(
                    f"Images may only be sent in user messages, not in a {message.role} message.",
                    param,
                )
            parts.append(ImagePart(param, part.image_url.url))
    return parts


def load_images(
    parts: Sequence[ImagePart],
    vision: ImagePreprocessor | None,
    limits: RequestLimits,
    model: str,
) -> ImageInputs | None:
    """Decode and preprocess ``parts`` for the model (None when there are none). Blocking:
    call it from a worker thread. Raises a 400 naming the part at fault."""
    if not parts:
        return None
    if vision is None:
        raise OpenAIError(
            f"The model `{model}` does not accept images; send text only, or use a "
            "vision-language model.",
            param=parts[0].param,
            code="image_input_not_supported",
        )
    if len(parts) > limits.image_max_per_request:
        raise invalid_param(
            f"This request has {len(parts)} images; this server takes at most "
            f"{limits.image_max_per_request} per request.",
            parts[limits.image_max_per_request].param,
            code="too_many_images",
        )
    images = [decode_data_url(part, limits) for part in parts]
    try:
        return vision.preprocess(images)
    except ValueError as exc:  # the preprocessor's own bounds (its sizes, aspect ratio)
        raise invalid_param(f"The image could not be used: {exc}", parts[0].param) from None


def decode_data_url(part: ImagePart, limits: RequestLimits) -> Any:
    """The RGB ``PIL.Image.Image`` of a ``data:image/...;base64,...`` URL, within the limits."""
    media_type, payload = _split_data_url(part)
    if len(payload) > 4 * (-(-limits.image_max_bytes // 3)):  # base64's 4 chars per 3 bytes
        raise _too_large(part, limits.image_max_bytes)
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise invalid_param("The image's data URL is not valid base64.", part.param) from None
    if len(data) > limits.image_max_bytes:
        raise _too_large(part, limits.image_max_bytes)
    return _decode(data, IMAGE_MEDIA_TYPES[media_type], part, limits.image_max_pixels)


def _split_data_url(part: ImagePart) -> tuple[str, str]:
    url = part.url.strip()
    scheme = url.split(":", 1)[0].lower()
    if scheme in ("http", "https"):
        raise invalid_param(
            "This replica takes images as data URLs only; send the request through the "
            "aiforge gateway, which fetches http(s) image URLs.",
            part.param,
            code="invalid_image_url",
        )
    header, sep, payload = url.partition(",")
    if scheme != "data" or not sep or not header.lower().endswith(";base64"):
        raise invalid_param(
            "An image URL must be an http(s) URL or a base64 data URL (data:image/png;base64,...).",
            part.param,
            code="invalid_image_url",
        )
    media_type = header[len("data:") : -len(";base64")].split(";", 1)[0].strip().lower()
    if media_type not in IMAGE_MEDIA_TYPES:
        raise invalid_param(
            f"Unsupported image type {media_type or 'none'!r}; send PNG, JPEG, WebP or GIF.",
            part.param,
            code="invalid_image_format",
        )
    return media_type, payload


def _decode(data: bytes, image_format: str, part: ImagePart, max_pixels: int) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # Pillow warns past its own bomb threshold; ours is checked just below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=[image_format])
        width, height = image.size
        if width * height > max_pixels:
            raise invalid_param(
                f"The image is {width}x{height} pixels; this server takes at most "
                f"{max_pixels} pixels per image.",
                part.param,
                code="image_too_large",
            )
        if min(width, height) < 1 or max(width, height) > MAX_ASPECT_RATIO * min(width, height):
            raise invalid_param(
                f"The image is {width}x{height} pixels; its sides may differ by at most "
                f"{MAX_ASPECT_RATIO} times.",
                part.param,
                code="invalid_image",
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image.seek(0)  # an animated GIF or WebP: its first frame
            return image.convert("RGB")
    except OpenAIError:
        raise
    except Image.DecompressionBombError:  # Pillow's own bound, far above ours: say so
        raise invalid_param(
            f"The image has more than this server's limit of {max_pixels} pixels.",
            part.param,
            code="image_too_large",
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, EOFError):
        raise invalid_param(
            f"The image could not be decoded as {image_format}.", part.param, code="invalid_image"
        ) from None


def _too_large(part: ImagePart, limit: int) -> OpenAIError:
    return invalid_param(
        f"The image is larger than this server's limit of {limit} bytes.",
        part.param,
        code="image_too_large",
    )


def expand_image_tokens(
    ids: Sequence[int], image_token_id: int, images: ImageInputs, parts: Sequence[ImagePart]
) -> list[int]:
    """``ids`` with the ``i``-th image placeholder repeated ``images.tokens_per_image[i]``
    times. The template must have placed exactly one placeholder per image: a template that
    drops images, or text that spells the placeholder itself, is a 400."""
    found = sum(1 for token in ids if token == image_token_id)
    if found != len(images.tokens_per_image):
        raise invalid_param(
            f"The chat template placed {found} image placeholder(s) for "
            f"{len(images.tokens_per_image)} image(s); the text may not contain the model's "
            "image tokens.",
            parts[0].param,
        )
    counts = iter(images.tokens_per_image)
    out: list[int] = []
    for token in ids:
        if token == image_token_id:
            out.extend([token] * next(counts))
        else:
            out.append(token)
    return out
