"""Images on the transformers engine, on the tiny random Qwen3-VL (``demo-vl``'s build).

The runner's chunked, batched prefill and its decodes must give the logits the HF model
gives for the whole prompt at once; the replica must count image tokens in ``usage`` and
refuse each bad image part with a 400 naming it.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from aiforge.engines.core import GenerationRequest, ImageInputs, SamplingParams
from aiforge.engines.server.limits import RequestLimits
from aiforge.engines.transformers import TransformersTokenEngine
from aiforge.engines.transformers.loading import LoadedModel, load_model
from aiforge.engines.transformers.runner import ModelRunner
from aiforge.engines.transformers.scheduler import DecodeItem, PrefillChunk
from aiforge.engines.transformers.vision import VisionPrefill
from aiforge.models.demo_vl import build_demo_vl
from aiforge.testing.fake_engine import fake_replica, sse_payloads
from aiforge.testing.image_server import bomb_png
from aiforge.testing.openai_schema import assert_conforms

MODEL = "demo-vl"


@pytest.fixture(scope="module")
def vl_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_vl(tmp_path_factory.mktemp("demo-vl"))


@pytest.fixture(scope="module")
def vl_model(vl_dir: Path) -> LoadedModel:
    return load_model(vl_dir, dtype="float32")


def noise_image(width: int, height: int, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def data_url(image: Image.Image, fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    mime = {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp", "GIF": "gif"}[fmt]
    return f"data:image/{mime};base64," + base64.b64encode(buffer.getvalue()).decode()


def prompt_with_image(loaded: LoadedModel, inputs: ImageInputs) -> list[int]:
    messages = [{"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image"}]}]
    text = loaded.tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    )
    ids = loaded.tokenizer.encode(text, add_special_tokens=False)
    assert loaded.images is not None
    pad = loaded.images.image_token_id
    out: list[int] = []
    for token in ids:
        out.extend([token] * inputs.tokens_per_image[0] if token == pad else [token])
    return out


def reference_logits(loaded: LoadedModel, ids: list[int], inputs: ImageInputs) -> torch.Tensor:
    """The HF model's own forward over the whole prompt: what the runner must reproduce."""
    assert loaded.images is not None
    x = torch.tensor([ids])
    with torch.inference_mode():
        out = loaded.model(
            input_ids=x,
            pixel_values=inputs.pixel_values,
            image_grid_thw=inputs.grid_thw,
            mm_token_type_ids=(x == loaded.images.image_token_id).to(torch.int),
        )
    logits: torch.Tensor = out.logits[0]
    return logits


def test_chunked_batched_prefill_and_decode_match_the_hf_model(vl_model: LoadedModel) -> None:
    assert vl_model.images is not None
    inputs = vl_model.images.preprocess([noise_image(100, 70)])
    assert inputs.tokens_per_image == (6,)  # 70x100 -> 64x96 pixels -> 2x3 merged patches
    ids = prompt_with_image(vl_model, inputs)
    ref = reference_logits(vl_model, ids, inputs)
    text_ids = vl_model.tokenizer.encode("hello there world", add_special_tokens=False)
    with torch.inference_mode():
        text_ref = vl_model.model(input_ids=torch.tensor([text_ids])).logits[0, -1]
    runner = ModelRunner(
        vl_model.model, max_num_seqs=2, max_model_len=512, vision=VisionPrefill(vl_model.model)
    )
    greedy = SamplingParams(max_tokens=4, temperature=0.0)
    runner.add_request(GenerationRequest("img", ids, greedy, images=inputs))
    runner.add_request(GenerationRequest("txt", text_ids, greedy))
    image_start = ids.index(vl_model.images.image_token_id)
    split = image_start + 2  # the first chunk ends inside the image
    with torch.inference_mode():
        first = runner._prefill(
            [
                PrefillChunk("img", 0, 0, tuple(ids[:split]), False),
                PrefillChunk("txt", 1, 0, tuple(text_ids), True),
            ]
        )
        last = runner._prefill([PrefillChunk("img", 0, split, tuple(ids[split:]), True)])
        token = int(ref[-1].argmax())
        decoded = runner._decode((DecodeItem("img", 0, len(ids), token),))
    torch.testing.assert_close(first[0], text_ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(last[0], ref[-1], atol=1e-4, rtol=1e-4)
    ref_next = reference_logits(vl_model, [*ids, token], inputs)[-1]
    torch.testing.assert_close(decoded[0], ref_next, atol=1e-4, rtol=1e-4)


def test_the_image_changes_the_logits(vl_model: LoadedModel) -> None:
    assert vl_model.images is not None
    a = vl_model.images.preprocess([noise_image(64, 64, seed=1)])
    b = vl_model.images.preprocess([noise_image(64, 64, seed=2)])
    ids = prompt_with_image(vl_model, a)
    runner = ModelRunner(
        vl_model.model, max_num_seqs=2, max_model_len=512, vision=VisionPrefill(vl_model.model)
    )
    greedy = SamplingParams(max_tokens=1, temperature=0.0)
    runner.add_request(GenerationRequest("a", ids, greedy, images=a))
    runner.add_request(GenerationRequest("b", ids, greedy, images=b))
    with torch.inference_mode():
        logits = runner._prefill(
            [PrefillChunk("a", 0, 0, tuple(ids), True), PrefillChunk("b", 1, 0, tuple(ids), True)]
        )
    assert not torch.allclose(logits[0], logits[1], atol=1e-3)


def test_placeholders_that_do_not_match_the_images_fail_the_request(
    vl_model: LoadedModel,
) -> None:
    assert vl_model.images is not None
    inputs = vl_model.images.preprocess([noise_image(64, 64)])
    ids = prompt_with_image(vl_model, inputs)[:-8]
    ids.remove(vl_model.images.image_token_id)
    prefill = VisionPrefill(vl_model.model)
    with pytest.raises(ValueError, match="image tokens"):
        prefill.add(GenerationRequest("x", ids, SamplingParams(max_tokens=1), images=inputs))


# -- through the replica server ----------------------------------------------------------


def image_chat(*urls: str, **extra: Any) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "text", "text": "What is in this picture?"}]
    content += [{"type": "image_url", "image_url": {"url": url}} for url in urls]
    body = {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 3}
    body.update(extra)
    return body


async def chat(
    loaded: LoadedModel, body: dict[str, Any], limits: RequestLimits | None = None
) -> httpx.Response:
    """One request to a replica over a fresh engine on the shared model (the replica's
    lifespan starts and stops its engine)."""
    engine = TransformersTokenEngine(loaded, max_num_seqs=4)
    async with fake_replica(
        engine, loaded.tokenizer, served_model_name=MODEL, limits=limits
    ) as client:
        return await client.post("/v1/chat/completions", json=body)


async def test_image_tokens_are_counted_in_usage(vl_model: LoadedModel) -> None:
    text_only = await chat(vl_model, image_chat())
    small = await chat(vl_model, image_chat(data_url(noise_image(64, 64))))
    large = await chat(vl_model, image_chat(data_url(noise_image(256, 192), "JPEG")))
    assert small.status_code == large.status_code == 200, small.text + large.text
    assert_conforms("CreateChatCompletionResponse", small.json())
    base = text_only.json()["usage"]["prompt_tokens"]
    markers = 3  # <|vision_start|>, <|image_pad|> and <|vision_end|>: one token each
    assert small.json()["usage"]["prompt_tokens"] == base + markers - 1 + 4  # 2x2 tokens
    assert large.json()["usage"]["prompt_tokens"] == base + markers - 1 + 48  # 6x8 tokens


async def test_streamed_image_chat_conforms(vl_model: LoadedModel) -> None:
    gif = data_url(noise_image(40, 90), "GIF")
    webp = data_url(noise_image(90, 40), "WEBP")
    body = image_chat(gif, webp, stream=True, stream_options={"include_usage": True})
    response = await chat(vl_model, body)
    assert response.status_code == 200, response.text
    events = sse_payloads(response.text)
    for chunk in events:
        assert_conforms("CreateChatCompletionStreamResponse", chunk)
    assert events[-1]["usage"]["prompt_tokens"] > 8


PART = "messages[0].content[1].image_url.url"


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("data:image/png;base64,not*base64", None),
        ("data:image/png;base64," + base64.b64encode(b"not an image").decode(), "invalid_image"),
        ("data:text/plain;base64,aGk=", "invalid_image_format"),
        ("data:image/png,rawbytes", "invalid_image_url"),
        ("ftp://example.com/cat.png", "invalid_image_url"),
        ("https://example.com/cat.png", "invalid_image_url"),
        (
            "data:image/png;base64," + base64.b64encode(bomb_png(60_000, 60_000)).decode(),
            "image_too_large",
        ),
        (
            "data:image/png;base64," + base64.b64encode(bomb_png(4000, 2)).decode(),
            "invalid_image",
        ),
    ],
)
async def test_bad_image_parts_are_a_400_naming_the_part(
    vl_model: LoadedModel, url: str, code: str | None
) -> None:
    response = await chat(vl_model, image_chat(url))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == PART
    if code is not None:
        assert error["code"] == code


async def test_image_limits_per_request_and_bytes(vl_model: LoadedModel) -> None:
    url = data_url(noise_image(32, 32))
    limits = RequestLimits(image_max_per_request=2)
    response = await chat(vl_model, image_chat(url, url, url), limits)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "messages[0].content[3].image_url.url"
    tight = RequestLimits(image_max_bytes=64)
    response = await chat(vl_model, image_chat(url), tight)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "image_too_large"


async def test_images_only_in_user_messages(vl_model: LoadedModel) -> None:
    body = image_chat()
    part = {"type": "image_url", "image_url": {"url": data_url(noise_image(32, 32))}}
    body["messages"].insert(0, {"role": "system", "content": [part]})
    response = await chat(vl_model, body)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "messages[0].content[0].image_url.url"


async def test_text_spelling_the_image_token_is_refused(vl_model: LoadedModel) -> None:
    body = image_chat(data_url(noise_image(32, 32)))
    body["messages"][0]["content"][0]["text"] = "sneaky <|image_pad|>"
    response = await chat(vl_model, body)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == PART
