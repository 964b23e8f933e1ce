"""The OpenAI Agents SDK (``openai-agents``): an agent with a function tool on the SDK's
default model, ``OpenAIResponsesModel`` (``/v1/responses``), streamed and not, structured
``output_type``; and the same agent on ``OpenAIChatCompletionsModel``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from agents import (
    Agent,
    ModelSettings,
    OpenAIChatCompletionsModel,
    OpenAIProvider,
    OpenAIResponsesModel,
    RunConfig,
    Runner,
    ToolCallItem,
    ToolCallOutputItem,
    function_tool,
    set_tracing_disabled,
)
from agents.result import RunResultBase
from clients_support import (
    CHAT_MODEL,
    NO_REASONING,
    NO_THINKING,
    STRUCTURED_MAX_TOKENS,
    ClientTarget,
    Forecast,
    get_weather,
)
from openai import AsyncOpenAI
from openai.types.responses import ResponseTextDeltaEvent
from openai.types.shared import Reasoning

pytestmark = pytest.mark.clients

weather_tool = function_tool(get_weather)
RESPONSES_SETTINGS = ModelSettings(
    max_tokens=STRUCTURED_MAX_TOKENS, reasoning=Reasoning(**NO_REASONING)
)


@pytest.fixture(autouse=True)
def no_tracing() -> None:
    """Traces would be exported to OpenAI's platform with the aiforge key: turn them off."""
    set_tracing_disabled(True)


@pytest.fixture
async def client(target: ClientTarget) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=target.base_url, api_key=target.api_key, max_retries=0) as c:
        yield c


def run_config(client: AsyncOpenAI) -> RunConfig:
    """The SDK's default provider on aiforge's client: models by name are Responses models."""
    provider = OpenAIProvider(openai_client=client)
    assert isinstance(provider.get_model(CHAT_MODEL), OpenAIResponsesModel)
    return RunConfig(model_provider=provider)


def weather_agent(model: str | OpenAIChatCompletionsModel, settings: ModelSettings) -> Agent[None]:
    """Forced to call the tool first; then (the SDK resets tool_choice to auto) it answers with
    a Forecast. A structured answer, because random weights never end free text by
    themselves, and the SDK raises on a Responses answer cut by ``max_output_tokens``."""
    forced = settings.resolve(ModelSettings(tool_choice="get_weather", parallel_tool_calls=False))
    return Agent(
        name="weather", instructions="Answer with the weather.", model=model,
        tools=[weather_tool], model_settings=forced, output_type=Forecast,
    )  # fmt: skip


def assert_called_weather_once(result: RunResultBase) -> None:
    calls = [item for item in result.new_items if isinstance(item, ToolCallItem)]
    outputs = [item for item in result.new_items if isinstance(item, ToolCallOutputItem)]
    assert [getattr(c.raw_item, "name", None) for c in calls] == ["get_weather"]
    assert len(outputs) == 1
    assert outputs[0].output in {get_weather("Paris"), get_weather("Tokyo")}
    assert isinstance(result.final_output, Forecast)


async def test_agent_with_tool_on_default_responses_model(client: AsyncOpenAI) -> None:
    agent = weather_agent(CHAT_MODEL, RESPONSES_SETTINGS)
    result = await Runner.run(agent, "Weather in Paris?", run_config=run_config(client))
    assert_called_weather_once(result)


async def test_agent_streamed_on_default_responses_model(client: AsyncOpenAI) -> None:
    agent = weather_agent(CHAT_MODEL, RESPONSES_SETTINGS)
    streamed = Runner.run_streamed(agent, "Weather in Paris?", run_config=run_config(client))
    text_deltas = [
        event.data.delta
        async for event in streamed.stream_events()
        if event.type == "raw_response_event" and isinstance(event.data, ResponseTextDeltaEvent)
    ]
    assert_called_weather_once(streamed)
    assert text_deltas
    assert Forecast.model_validate_json("".join(text_deltas)) == streamed.final_output


async def test_structured_output_type_on_default_responses_model(client: AsyncOpenAI) -> None:
    agent = Agent(
        name="forecaster", instructions="Forecast.", model=CHAT_MODEL,
        output_type=Forecast, model_settings=RESPONSES_SETTINGS,
    )  # fmt: skip
    result = await Runner.run(agent, "Rain in Paris?", run_config=run_config(client))
    assert isinstance(result.final_output, Forecast)


async def test_agent_with_tool_on_chat_completions_model(client: AsyncOpenAI) -> None:
    model = OpenAIChatCompletionsModel(model=CHAT_MODEL, openai_client=client)
    settings = ModelSettings(max_tokens=STRUCTURED_MAX_TOKENS, extra_body=NO_THINKING)
    result = await Runner.run(weather_agent(model, settings), "Weather in Paris?")
    assert_called_weather_once(result)
