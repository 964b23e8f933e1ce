"""Image parts at a replica whose model takes no images, and their wire shape."""

from __future__ import annotations

from typing import Any

from aiforge.protocol.openai.chat import ChatCompletionRequest, ImageContentPart

ClientFactory = Any
PNG_1PX = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4"
    "z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"
)


def image_body(model: str = "qwen3-test") -> dict[str, Any]:
    return {
        "model": model,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": PNG_1PX, "detail": "low"}},
                ],
            },
        ],
    }


async def test_a_text_only_model_refuses_images_naming_the_part(replica: ClientFactory) -> None:
    async with replica() as (client, engine):
        response = await client.post("/v1/chat/completions", json=image_body())
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "messages[1].content[1].image_url.url"
    assert error["code"] == "image_input_not_supported"
    assert "qwen3-test" in error["message"]
    assert "does not accept images" in error["message"]
    assert engine.requests == []


def test_image_parts_parse_and_are_left_out_of_the_text() -> None:
    request = ChatCompletionRequest.model_validate(image_body())
    content = request.messages[1].content
    assert isinstance(content, list)
    assert isinstance(content[1], ImageContentPart)
    assert content[1].image_url.detail == "low"
    assert request.messages[1].text() == "What is this?"
