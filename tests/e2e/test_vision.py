"""Vision input through ``aiforge serve --model demo-vl`` with the official ``openai`` client.

``demo-vl`` (a tiny random Qwen3-VL) is built from nothing in a fresh cache. Images go as
data URLs and as http URLs the gateway fetches from a real server on 127.0.0.1 — allowed
only because this gateway allowlists ``127.0.0.1/32`` (``AIFORGE_IMAGE_FETCH_ALLOW_NETWORKS``);
every other loopback, private or metadata address stays refused, also behind a redirect.
Bodies and stream chunks are validated against the OpenAPI fixture; image tokens are
checked in ``usage`` and in the gateway's usage ledger.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from e2e_helpers import auth, error_of

from aiforge.testing.image_server import ImageServer, png_bytes
from aiforge.testing.openai_schema import assert_conforms
from aiforge.testing.server import RemoteAiforgeServer

MODEL = "demo-vl"


@pytest.fixture(scope="module")
def images() -> Iterator[ImageServer]:
    with ImageServer() as server:
        yield server


@pytest.fixture(scope="module")
def vl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RemoteAiforgeServer]:
    root = tmp_path_factory.mktemp("e2e-demo-vl")
    env = {
        "AIFORGE_CACHE_DIR": str(root / "cache"),  # built here, from nothing
        "AIFORGE_IMAGE_FETCH_ALLOW_NETWORKS": json.dumps(["127.0.0.1/32"]),
    }
    with RemoteAiforgeServer(MODEL, engine="auto", env=env, data_dir=root / "data") as remote:
        yield remote


def data_url(width: int, height: int, image_format: str = "PNG") -> str:
    media = {"PNG": "png", "JPEG": "jpeg"}[image_format]
    encoded = base64.b64encode(png_bytes(width, height, image_format)).decode()
    return f"data:image/{media};base64,{encoded}"


def messages(*urls: str) -> list[Any]:
    content: list[dict[str, Any]] = [{"type": "text", "text": "What is in the picture?"}]
    content += [{"type": "image_url", "image_url": {"url": url, "detail": "auto"}} for url in urls]
    return [{"role": "user", "content": content}]


def raw_chat(client: openai.OpenAI, *urls: str) -> dict[str, Any]:
    """A non-streamed chat completion's body exactly as it came over the wire."""
    response = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=messages(*urls), max_tokens=4
    )
    body: dict[str, Any] = json.loads(response.http_response.text)
    assert_conforms("CreateChatCompletionResponse", body)
    return body


def test_data_url_images_count_in_usage(vl: RemoteAiforgeServer) -> None:
    client = vl.client()
    text_only = raw_chat(client)["usage"]["prompt_tokens"]
    small = raw_chat(client, data_url(64, 64))["usage"]["prompt_tokens"]
    large = raw_chat(client, data_url(256, 192, "JPEG"))["usage"]["prompt_tokens"]
    two = raw_chat(client, data_url(64, 64), data_url(64, 64))["usage"]["prompt_tokens"]
    # Three marker tokens replace none; a 64x64 image is 2x2 tokens, 256x192 is 8x6.
    assert small == text_only + 2 + 4
    assert large == text_only + 2 + 48
    assert two == text_only + 2 * (2 + 4)


def test_an_http_image_is_fetched_by_the_gateway_and_streamed(
    vl: RemoteAiforgeServer, images: ImageServer
) -> None:
    client = vl.client()
    url = images.url("/image.png?w=128&h=64")
    stream = client.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=messages(url),
        max_tokens=4,
        stream=True,
        stream_options={"include_usage": True},
    )
    payloads = [
        line.removeprefix("data:").strip()
        for line in stream.http_response.iter_lines()
        if line.startswith("data:")
    ]
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    for chunk in chunks:
        assert_conforms("CreateChatCompletionStreamResponse", chunk)
    inlined = raw_chat(client, data_url(128, 64))["usage"]["prompt_tokens"]
    assert chunks[-1]["usage"]["prompt_tokens"] == inlined  # the same image, fetched
    assert ("/image.png", f"127.0.0.1:{images.port}") in images.requests


def _metered(server: RemoteAiforgeServer) -> tuple[int, int]:
    report = httpx.get(
        server.url_for("admin", "v1", "usage"),
        headers=auth(server),
        params={"group_by": "model", "model": MODEL},
        timeout=30.0,
    )
    assert report.status_code == 200, report.text
    rows = [row for row in report.json()["data"] if row["group"] == MODEL]
    return (rows[0]["requests"], rows[0]["prompt_tokens"]) if rows else (0, 0)


def test_image_tokens_are_metered(vl: RemoteAiforgeServer) -> None:
    seen = _metered(vl)
    while True:  # the ledger is written in batches: wait until earlier requests landed
        time.sleep(2.0)
        if (again := _metered(vl)) == seen:
            break
        seen = again
    body = raw_chat(vl.client(), data_url(256, 192))
    expected = (seen[0] + 1, seen[1] + body["usage"]["prompt_tokens"])
    deadline = time.monotonic() + 30.0
    while (now := _metered(vl)) != expected:
        assert time.monotonic() < deadline, (now, expected)
        time.sleep(0.5)


REFUSED = [
    ("http://[::1]:{port}/image.png", "loopback"),
    ("http://127.0.0.2:{port}/image.png", "loopback"),
    ("http://169.254.169.254/latest/meta-data/", "metadata"),
    ("{server}/redirect?to=http://169.254.169.254/latest/meta-data/", "metadata"),
    ("{server}/redirect?to=http://10.1.2.3/cat.png", "private"),
    ("{server}/redirect?to=http://[::ffff:127.0.0.3]:{port}/image.png", "loopback"),
    ("{server}/text", "content type"),
    ("{server}/bomb.png", "pixels"),
    ("{server}/missing", "404"),
    ("file:///etc/passwd", "data URL"),
    ("data:image/png;base64,bm90IGFuIGltYWdl", "could not be decoded"),
]


@pytest.mark.parametrize(("template", "reason"), REFUSED)
def test_refused_images_are_a_400_naming_the_part(
    vl: RemoteAiforgeServer, images: ImageServer, template: str, reason: str
) -> None:
    url = template.format(port=images.port, server=f"http://127.0.0.1:{images.port}")
    with pytest.raises(openai.BadRequestError) as refused:
        vl.client().chat.completions.create(
            model=MODEL, messages=messages(data_url(32, 32), url), max_tokens=2
        )
    error = error_of(refused.value.response)
    assert error["param"] == "messages[0].content[2].image_url.url"
    assert reason in error["message"]
