"""pydantic-ai: agents on ``OpenAIChatModel`` (chat completions) and ``OpenAIResponsesModel``
(``/v1/responses``), through ``OpenAIProvider(base_url=...)`` and ``OpenAICompatibleProvider``:
text, streaming, structured ``output_type`` (tool and native modes) and a forced tool."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from clients_support import (
    CHAT_MODEL,
    CITIES,
    MAX_TOKENS,
    NO_THINKING,
    STRUCTURED_MAX_TOKENS,
    ClientTarget,
    Forecast,
    get_weather,
)
from openai import AsyncOpenAI
from pydantic_ai import Agent, NativeOutput, RunContext, ToolCallPart, ToolReturnPart
from pydantic_ai.models import Model
from pydantic_ai.models.openai import (
    OpenAIChatModel,
    OpenAIChatModelSettings,
    OpenAIResponsesModel,
    OpenAIResponsesModelSettings,
)
from pydantic_ai.providers import Provider
from pydantic_ai.providers.openai import OpenAIProvider
from pydantic_ai.providers.openai_compatible import OpenAICompatibleProvider

pytestmark = pytest.mark.clients

PROVIDERS = ("openai", "openai-compatible")


@pytest.fixture
async def client(target: ClientTarget) -> AsyncIterator[AsyncOpenAI]:
    """The providers' client, closed after each test (``base_url=``/``api_key=`` on a provider
    build the same client, but on a process-wide HTTP pool that outlives each test's loop)."""
    async with AsyncOpenAI(base_url=target.base_url, api_key=target.api_key, max_retries=0) as c:
        yield c


def provider(client: AsyncOpenAI, kind: str) -> Provider[Any]:
    if kind == "openai":
        return OpenAIProvider(openai_client=client)
    return OpenAICompatibleProvider("aiforge", openai_client=client)


SEED = 7
"""The random-weight model samples: unseeded, one run in many drew only tokens that leave no
text (a special token, an opened think block), which pydantic-ai refuses as an empty answer."""


def chat_settings(max_tokens: int) -> OpenAIChatModelSettings:
    return OpenAIChatModelSettings(max_tokens=max_tokens, extra_body=NO_THINKING, seed=SEED)


def responses_settings(max_tokens: int) -> OpenAIResponsesModelSettings:
    return OpenAIResponsesModelSettings(
        max_tokens=max_tokens, openai_reasoning_effort="none", seed=SEED
    )


def models(client: AsyncOpenAI, kind: str) -> dict[str, tuple[Model, Any]]:
    """Both model classes on one provider, each with the settings that turn thinking off."""
    chat = OpenAIChatModel(CHAT_MODEL, provider=provider(client, kind))
    responses = OpenAIResponsesModel(CHAT_MODEL, provider=provider(client, kind))
    return {"chat": (chat, chat_settings), "responses": (responses, responses_settings)}


@pytest.mark.parametrize("kind", PROVIDERS)
async def test_chat_model_text_and_stream(client: AsyncOpenAI, kind: str) -> None:
    model, settings = models(client, kind)["chat"]
    agent = Agent(model, model_settings=settings(MAX_TOKENS))
    result = await agent.run("Hello there")
    assert isinstance(result.output, str)
    assert result.output
    assert result.usage.output_tokens == MAX_TOKENS
    async with agent.run_stream("Hello there") as run:
        deltas = [delta async for delta in run.stream_text(delta=True, debounce_by=None)]
    assert len(deltas) > 1
    assert "".join(deltas)


@pytest.mark.parametrize("api", ["chat", "responses"])
@pytest.mark.parametrize("mode", ["tool", "native"])
async def test_structured_output(client: AsyncOpenAI, api: str, mode: str) -> None:
    """``output_type``: pydantic-ai's default output tool, and ``NativeOutput``
    (``response_format`` / ``text.format`` json_schema)."""
    model, settings = models(client, "openai-compatible")[api]
    output_type: Any = Forecast if mode == "tool" else NativeOutput(Forecast)
    agent = Agent(model, output_type=output_type, model_settings=settings(STRUCTURED_MAX_TOKENS))
    result = await agent.run("Will it rain in Paris?")
    assert isinstance(result.output, Forecast)


@pytest.mark.parametrize("api", ["chat", "responses"])
async def test_forced_tool_then_answer(client: AsyncOpenAI, api: str) -> None:
    """The first step must call ``get_weather`` (once); the agent runs it, the model answers."""
    model, settings = models(client, "openai-compatible")[api]

    def step_settings(ctx: RunContext[None]) -> Any:
        first = {"tool_choice": ["get_weather"], "parallel_tool_calls": False}
        return {**settings(STRUCTURED_MAX_TOKENS), **(first if ctx.run_step <= 1 else {})}

    agent = Agent(model, tools=[get_weather], model_settings=step_settings)
    result = await agent.run("Weather in Paris?")
    calls = [p for m in result.all_messages() for p in m.parts if isinstance(p, ToolCallPart)]
    returns = [p for m in result.all_messages() for p in m.parts if isinstance(p, ToolReturnPart)]
    assert [c.tool_name for c in calls] == ["get_weather"]
    assert calls[0].args_as_dict()["city"] in CITIES
    assert returns[0].content == get_weather(calls[0].args_as_dict()["city"])
    assert isinstance(result.output, str)


@pytest.mark.parametrize("kind", PROVIDERS)
async def test_responses_model_text_and_stream(client: AsyncOpenAI, kind: str) -> None:
    model, settings = models(client, kind)["responses"]
    agent = Agent(model, model_settings=settings(MAX_TOKENS))
    result = await agent.run("Hello there")
    assert isinstance(result.output, str)
    assert result.output
    async with agent.run_stream("Hello there") as run:
        assert "".join([delta async for delta in run.stream_text(delta=True, debounce_by=None)])
