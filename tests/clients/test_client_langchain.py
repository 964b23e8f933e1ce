"""LangChain (``langchain-openai``): ChatOpenAI on chat completions and on the Responses API,
and OpenAIEmbeddings."""

from __future__ import annotations

from typing import Any, Literal

import pytest
from clients_support import (
    CITIES,
    MAX_TOKENS,
    NO_REASONING,
    NO_THINKING,
    STRUCTURED_MAX_TOKENS,
    ClientTarget,
    Forecast,
    get_weather,
)
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_openai import ChatOpenAI, OpenAIEmbeddings

pytestmark = pytest.mark.clients


def chat_model(target: ClientTarget, max_tokens: int = MAX_TOKENS, **kwargs: Any) -> ChatOpenAI:
    return ChatOpenAI(
        model=target.chat_model,
        base_url=target.base_url,
        api_key=target.api_key,
        max_tokens=max_tokens,
        max_retries=0,
        **kwargs,
    )


def test_invoke_and_stream(target: ClientTarget) -> None:
    llm = chat_model(target, extra_body=NO_THINKING)
    answer = llm.invoke("Hello there")
    assert isinstance(answer, AIMessage)
    assert isinstance(answer.content, str)
    assert answer.content
    assert answer.usage_metadata is not None
    assert answer.usage_metadata["output_tokens"] == MAX_TOKENS
    chunks = list(llm.stream("Hello there"))
    assert len(chunks) > 1
    assert all(isinstance(chunk, AIMessageChunk) for chunk in chunks)
    assert "".join(str(chunk.content) for chunk in chunks)


def test_bind_tools_forced(target: ClientTarget) -> None:
    llm = chat_model(target, STRUCTURED_MAX_TOKENS, extra_body=NO_THINKING)
    answer = llm.bind_tools([get_weather], tool_choice="get_weather").invoke("Weather in Paris?")
    assert isinstance(answer, AIMessage)
    assert not answer.invalid_tool_calls
    [call] = answer.tool_calls
    assert call["name"] == "get_weather"
    assert call["args"]["city"] in CITIES
    assert call["id"]


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_with_structured_output(
    target: ClientTarget, method: Literal["json_schema", "function_calling"]
) -> None:
    # Not json_mode: an unconstrained object from random weights never closes its strings.
    llm = chat_model(target, STRUCTURED_MAX_TOKENS, extra_body=NO_THINKING)
    forecast = llm.with_structured_output(Forecast, method=method).invoke("Rain in Paris?")
    assert isinstance(forecast, Forecast)


def test_responses_api(target: ClientTarget) -> None:
    """``use_responses_api=True``: ChatOpenAI on ``/v1/responses``, plain, streamed, forced
    tool and structured output."""
    llm = chat_model(target, use_responses_api=True, reasoning=NO_REASONING)
    answer = llm.invoke("Hello there")
    assert isinstance(answer, AIMessage)
    assert answer.text
    assert "".join(chunk.text for chunk in llm.stream("Hello there"))
    tools = chat_model(
        target, STRUCTURED_MAX_TOKENS, use_responses_api=True, reasoning=NO_REASONING
    )
    call = tools.bind_tools([get_weather], tool_choice="get_weather").invoke("Weather?")
    assert isinstance(call, AIMessage)
    assert [c["name"] for c in call.tool_calls] == ["get_weather"]
    assert call.tool_calls[0]["args"]["city"] in CITIES
    forecast = tools.with_structured_output(Forecast, method="json_schema").invoke("Rain?")
    assert isinstance(forecast, Forecast)


def test_embeddings(embedding_target: ClientTarget) -> None:
    # LangChain tokenizes with tiktoken and sends OpenAI token ids unless told not to: those
    # mean nothing to a Qwen tokenizer, so check_embedding_ctx_length=False sends the text.
    embeddings = OpenAIEmbeddings(
        model=embedding_target.embedding_model,
        base_url=embedding_target.base_url,  # type: ignore[call-arg]
        api_key=embedding_target.api_key,
        check_embedding_ctx_length=False,
        max_retries=0,
    )
    vectors = embeddings.embed_documents(["first text", "second text"])
    assert len(vectors) == 2
    assert len(vectors[0]) == len(vectors[1]) > 0
    assert all(isinstance(x, float) for x in vectors[0])
    query = embeddings.embed_query("first text")
    assert len(query) == len(vectors[0])
