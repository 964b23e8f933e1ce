"""The LiteLLM SDK: ``litellm.completion`` on the ``openai/`` provider with ``api_base``
(text, streaming, a forced tool, ``response_format``), ``litellm.embedding`` and
``litellm.responses``."""

from __future__ import annotations

import gc
import json
import os
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

# Without this LiteLLM fetches its model price list from the internet when imported.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm
from clients_support import (
    CITIES,
    MAX_TOKENS,
    NO_REASONING,
    NO_THINKING,
    STRUCTURED_MAX_TOKENS,
    WEATHER_PARAMETERS,
    ClientTarget,
    Forecast,
)

pytestmark = [
    pytest.mark.clients,
    # LiteLLM's own TypedDicts, seen by pydantic when litellm builds its types.
    pytest.mark.filterwarnings("ignore:.*the `ReadOnly` qualifier:UserWarning"),
]

WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Weather", "parameters": WEATHER_PARAMETERS},
}


@pytest.fixture(scope="module", autouse=True)
def release_litellm_clients() -> Iterator[None]:
    """LiteLLM caches its HTTP clients (and its sync calls leave an event loop) for the life of
    the process; drop them after this module, so -W error does not see them at exit."""
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        litellm.in_memory_llm_clients_cache.flush_cache()
        gc.collect()


def connection(target: ClientTarget) -> dict[str, Any]:
    """``openai/<served name>`` plus ``api_base``: LiteLLM's OpenAI-compatible route."""
    return {
        "model": f"openai/{target.chat_model}",
        "api_base": target.base_url,
        "api_key": target.api_key,
        "num_retries": 0,
    }


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_completion_and_stream(target: ClientTarget) -> None:
    common = {**connection(target), "max_tokens": MAX_TOKENS, "extra_body": NO_THINKING}
    reply: Any = litellm.completion(messages=ask("Hello there"), **common)
    assert isinstance(reply.choices[0].message.content, str)
    assert reply.choices[0].message.content
    assert reply.usage.completion_tokens == MAX_TOKENS
    chunks = list(litellm.completion(messages=ask("Hello there"), stream=True, **common))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta]
    assert len(chunks) > 1
    assert "".join(p for p in pieces if p)


def test_forced_tool(target: ClientTarget) -> None:
    reply: Any = litellm.completion(
        messages=ask("Weather in Paris?"), tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=STRUCTURED_MAX_TOKENS, extra_body=NO_THINKING, **connection(target),
    )  # fmt: skip
    [call] = reply.choices[0].message.tool_calls
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments)["city"] in CITIES
    assert reply.choices[0].finish_reason == "tool_calls"


def test_response_format_pydantic(target: ClientTarget) -> None:
    reply: Any = litellm.completion(
        messages=ask("Rain in Paris?"), response_format=Forecast,
        max_tokens=STRUCTURED_MAX_TOKENS, extra_body=NO_THINKING, **connection(target),
    )  # fmt: skip
    Forecast.model_validate_json(reply.choices[0].message.content)


def test_embedding(embedding_target: ClientTarget) -> None:
    result: Any = litellm.embedding(
        model=f"openai/{embedding_target.embedding_model}",
        input=["first text", "second text"],
        api_base=embedding_target.base_url,
        api_key=embedding_target.api_key,
    )
    vectors = [item["embedding"] for item in result.data]
    assert len(vectors) == 2
    assert len(vectors[0]) == len(vectors[1]) > 0
    assert result.usage.prompt_tokens > 0


def test_responses(target: ClientTarget) -> None:
    common = {**connection(target), "max_output_tokens": MAX_TOKENS, "reasoning": NO_REASONING}
    common.pop("num_retries")
    response: Any = litellm.responses(input="Hello there", **common)
    assert response.output_text
    stream: Any = litellm.responses(input="Hello there", stream=True, **common)
    events = list(stream)
    deltas = [e.delta for e in events if getattr(e, "type", "") == "response.output_text.delta"]
    assert deltas
    assert events[-1].type in ("response.completed", "response.incomplete")
