"""LlamaIndex against aiforge: ``OpenAILike`` (chat, streaming, a forced tool, structured
``as_structured_llm``) and ``OpenAIEmbedding`` with ``api_base``."""

# No `from __future__ import annotations`: FunctionTool reads get_weather's annotations as
# objects, and a string "Literal[...]" cannot be resolved in its module.
from typing import Literal

from check_runner import (
    CITIES,
    MAX_TOKENS,
    NO_THINKING,
    STRUCTURED_MAX_TOKENS,
    Forecast,
    Target,
    run,
)
from llama_index.core.llms import ChatMessage
from llama_index.core.tools import FunctionTool
from llama_index.embeddings.openai import OpenAIEmbedding
from llama_index.llms.openai_like import OpenAILike


def get_weather(city: Literal["Paris", "Tokyo"]) -> str:
    """Current weather in a city."""
    return f"18 degrees and dry in {city}"


def llm(target: Target, max_tokens: int) -> OpenAILike:
    return OpenAILike(
        model=target.chat_model,
        api_base=target.base_url,
        api_key=target.api_key,
        is_chat_model=True,  # else LlamaIndex sends prompts to /v1/completions
        is_function_calling_model=True,  # else it refuses tools
        context_window=4096,
        max_tokens=max_tokens,
        max_retries=0,
        additional_kwargs={"extra_body": NO_THINKING},
    )


def chat(target: Target) -> None:
    answer = llm(target, MAX_TOKENS).chat([ChatMessage(role="user", content="Hello there")])
    assert isinstance(answer.message.content, str), answer
    assert answer.message.content, answer
    completion = llm(target, MAX_TOKENS).complete("Hello there")
    assert completion.text


def stream(target: Target) -> None:
    chunks = list(llm(target, MAX_TOKENS).stream_chat([ChatMessage(role="user", content="Hi")]))
    assert len(chunks) > 1
    assert chunks[-1].message.content


def forced_tool(target: Target) -> None:
    tool = FunctionTool.from_defaults(fn=get_weather)
    model = llm(target, STRUCTURED_MAX_TOKENS)
    response = model.chat_with_tools(
        [tool], user_msg="Weather in Paris?", tool_required=True, allow_parallel_tool_calls=False
    )
    [call] = model.get_tool_calls_from_response(response, error_on_no_tool_call=True)
    assert call.tool_name == "get_weather", call
    assert call.tool_kwargs["city"] in CITIES, call


def structured(target: Target) -> None:
    structured_llm = llm(target, STRUCTURED_MAX_TOKENS).as_structured_llm(Forecast)
    answer = structured_llm.chat([ChatMessage(role="user", content="Rain in Paris?")])
    assert isinstance(answer.raw, Forecast), answer.raw


def embeddings(target: Target) -> None:
    # model_name, not model: OpenAIEmbedding checks `model` against OpenAI's own names.
    model = OpenAIEmbedding(
        model_name=target.embedding_model,
        api_base=target.base_url,
        api_key=target.api_key,
        max_retries=0,
    )
    vectors = model.get_text_embedding_batch(["first text", "second text"])
    assert len(vectors) == 2
    assert len(vectors[0]) == len(vectors[1]) > 0
    assert len(model.get_query_embedding("first text")) == len(vectors[0])


run(
    {
        "chat": chat,
        "stream": stream,
        "forced_tool": forced_tool,
        "structured": structured,
        "embeddings": embeddings,
    }
)
