"""Chat and completions through ``aiforge serve``, driven by the official openai client."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from conftest import MODEL_NAME
from e2e_helpers import chat_chunks, post_json, stream_chunks
from openai.types.chat import ChatCompletion

from aiforge.testing.openai_schema import assert_conforms
from aiforge.testing.server import RemoteAiforgeServer

MESSAGES: Any = [{"role": "user", "content": "Say hello."}]
NO_THINK: dict[str, Any] = {"chat_template_kwargs": {"enable_thinking": False}}


def test_models_list(server: RemoteAiforgeServer) -> None:
    models = server.client().models.list()
    assert [m.id for m in models.data] == [MODEL_NAME]
    response = server.client().models.with_raw_response.list()
    assert_conforms("ListModelsResponse", orjson.loads(response.http_response.content))


def test_chat_non_streamed(server: RemoteAiforgeServer) -> None:
    raw = post_json(
        server,
        "/v1/chat/completions",
        {"model": MODEL_NAME, "messages": MESSAGES, "max_tokens": 8, **NO_THINK},
    )
    assert raw.status_code == 200
    assert_conforms("CreateChatCompletionResponse", raw.json())
    completion = server.client().chat.completions.create(
        model=MODEL_NAME, messages=MESSAGES, max_tokens=8, extra_body=NO_THINK
    )
    choice = completion.choices[0]
    assert choice.finish_reason in ("stop", "length")
    assert choice.message.role == "assistant"
    assert completion.usage is not None
    assert completion.usage.completion_tokens <= 8
    assert completion.usage.prompt_tokens > 5


def test_chat_streamed_with_and_without_usage(server: RemoteAiforgeServer) -> None:
    body = {"model": MODEL_NAME, "messages": MESSAGES, "max_tokens": 6, **NO_THINK}
    plain = chat_chunks(server, body)
    assert all(chunk["choices"] for chunk in plain), "no usage chunk unless asked"
    assert plain[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    with_usage = chat_chunks(server, {**body, "stream_options": {"include_usage": True}})
    assert with_usage[-1]["choices"] == []
    usage = with_usage[-1]["usage"]
    assert 1 <= usage["completion_tokens"] <= 6
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_seeded_sampling_n_and_stop(server: RemoteAiforgeServer) -> None:
    client = server.client()

    def sample(seed: int, **extra: object) -> ChatCompletion:
        return client.chat.completions.create(  # type: ignore[call-overload, no-any-return]
            model=MODEL_NAME,
            messages=MESSAGES,
            max_tokens=12,
            temperature=1.0,
            seed=seed,
            extra_body=NO_THINK,
            **extra,
        )

    # A random model may end at once for some seeds: take the first seed that writes text.
    seed, text = next(
        (s, c) for s in range(20) if len(c := sample(s).choices[0].message.content or "") >= 6
    )
    assert sample(seed).choices[0].message.content == text, "a seed makes sampling reproducible"
    two = sample(seed, n=2)
    assert sorted(c.index for c in two.choices) == [0, 1]
    stop = text[len(text) // 2 :][:3]
    stopped = sample(seed, stop=[stop]).choices[0]
    assert stopped.finish_reason == "stop"
    assert stopped.message.content == text[: text.index(stop)]


def test_logprobs(server: RemoteAiforgeServer) -> None:
    completion = server.client().chat.completions.create(
        model=MODEL_NAME,
        messages=MESSAGES,
        max_tokens=4,
        logprobs=True,
        top_logprobs=2,
        extra_body=NO_THINK,
    )
    logprobs = completion.choices[0].logprobs
    assert logprobs is not None
    assert logprobs.content
    for token in logprobs.content:
        assert token.logprob <= 0.0
        assert len(token.top_logprobs) == 2


def test_completions_streamed_and_not(server: RemoteAiforgeServer) -> None:
    body = {"model": MODEL_NAME, "prompt": "Once upon a time", "max_tokens": 5}
    raw = post_json(server, "/v1/completions", body)
    assert raw.status_code == 200
    assert_conforms("CreateCompletionResponse", raw.json())
    chunks = stream_chunks(
        server, "/v1/completions", {**body, "stream_options": {"include_usage": True}}
    )
    assert chunks[-1]["usage"]["completion_tokens"] >= 1
    text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
    completion = server.client().completions.create(
        model=MODEL_NAME, prompt="Once upon a time", max_tokens=5
    )
    assert completion.choices[0].text is not None
    assert isinstance(text, str)


def test_thinking_on_and_off(server: RemoteAiforgeServer) -> None:
    client = server.client()
    off = client.chat.completions.create(
        model=MODEL_NAME,
        messages=MESSAGES,
        max_tokens=8,
        extra_body=NO_THINK,
    )
    assert getattr(off.choices[0].message, "reasoning_content", None) in (None, "")
    on = post_json(
        server,
        "/v1/chat/completions",
        {
            "model": MODEL_NAME,
            "messages": MESSAGES,
            "max_tokens": 8,
            "chat_template_kwargs": {"enable_thinking": True},
        },
    )
    assert on.status_code == 200
    assert_conforms("CreateChatCompletionResponse", on.json())
    message = on.json()["choices"][0]["message"]
    assert (message.get("reasoning_content") or "") + (message.get("content") or "")


def test_sixteen_concurrent_streams(server: RemoteAiforgeServer) -> None:
    async def run() -> list[tuple[int, str | None]]:
        client = server.async_client()

        async def one(i: int) -> tuple[int, str | None]:
            stream = await client.chat.completions.create(
                model=MODEL_NAME,
                messages=[{"role": "user", "content": f"Count to {i}."}],
                max_tokens=8,
                stream=True,
                stream_options={"include_usage": True},
                extra_body=NO_THINK,
            )
            pieces, finish, usage = 0, None, None
            async for chunk in stream:
                if chunk.usage is not None:
                    usage = chunk.usage
                for choice in chunk.choices:
                    pieces += bool(choice.delta.content)
                    finish = choice.finish_reason or finish
            assert usage is not None
            assert usage.completion_tokens >= pieces
            return pieces, finish

        try:
            return await asyncio.gather(*(one(i) for i in range(16)))
        finally:
            await client.close()

    results = asyncio.run(run())
    assert len(results) == 16
    assert all(finish in ("stop", "length") for _, finish in results)


def test_langchain_chat_openai(server: RemoteAiforgeServer) -> None:
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(
        model=MODEL_NAME,
        base_url=server.base_url,
        api_key=server.api_key,
        max_tokens=6,
        temperature=0,
        max_retries=0,
        extra_body=NO_THINK,
    )
    answer = llm.invoke("Hello there")
    assert isinstance(answer.content, str)
    assert answer.usage_metadata is not None
    assert answer.usage_metadata["output_tokens"] >= 1
    streamed = "".join(str(chunk.content) for chunk in llm.stream("Hello there"))
    assert streamed == answer.content
