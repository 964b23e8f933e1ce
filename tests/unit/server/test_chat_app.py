"""The replica app through HTTP (ASGI) with a scripted engine and the real Qwen3 tokenizer."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from transformers import PreTrainedTokenizerBase

from aiforge.testing.fake_engine import sse_payloads as sse_events
from aiforge.testing.openai_schema import assert_conforms

MODEL = "qwen3-test"
ClientFactory = Any


def chat_body(**extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]}
    body.update(extra)
    return body


THOUGHT_AND_CALL = (
    "<think>\nThe user wants weather.\n</think>\n\n"
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
)
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


async def test_chat_plain_answer_conforms(replica: ClientFactory) -> None:
    async with replica(text="<think>\nhmm\n</think>\n\nHello there!", cached_prompt_tokens=3) as (
        client,
        _,
    ):
        response = await client.post("/v1/chat/completions", json=chat_body())
    assert response.status_code == 200
    body = response.json()
    assert_conforms("CreateChatCompletionResponse", body)
    message = body["choices"][0]["message"]
    assert message["content"] == "Hello there!"
    assert message["reasoning_content"] == "hmm"
    assert body["choices"][0]["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["prompt_tokens_details"] == {"cached_tokens": 3}


async def test_chat_stream_tool_call_deltas(replica: ClientFactory) -> None:
    body = chat_body(tools=[WEATHER_TOOL], stream=True, stream_options={"include_usage": True})
    async with replica(text=THOUGHT_AND_CALL) as (client, _):
        response = await client.post("/v1/chat/completions", json=body)
    chunks = sse_events(response.text)
    for chunk in chunks:
        assert_conforms("CreateChatCompletionStreamResponse", chunk)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    calls = [tc for d in deltas for tc in d.get("tool_calls", [])]
    assert calls[0]["id"].startswith("call_")
    assert calls[0]["function"]["name"] == "get_weather"
    assert calls[0]["type"] == "function"
    assert all("id" not in c and "name" not in c["function"] for c in calls[1:])
    arguments = "".join(c["function"].get("arguments", "") for c in calls)
    assert json.loads(arguments) == {"city": "Paris"}
    reasoning = "".join(d.get("reasoning_content", "") for d in deltas)
    assert reasoning == "The user wants weather."
    assert not "".join(d.get("content") or "" for d in deltas)
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "tool_calls"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] > 0


async def test_chat_tool_call_whole_response(replica: ClientFactory) -> None:
    async with replica(text=THOUGHT_AND_CALL) as (client, _):
        response = await client.post("/v1/chat/completions", json=chat_body(tools=[WEATHER_TOOL]))
    body = response.json()
    assert_conforms("CreateChatCompletionResponse", body)
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}


def streamed_message(text: str) -> tuple[dict[str, Any], str]:
    """The message a streamed chat response adds up to, and its finish reason."""
    chunks = sse_events(text)
    for chunk in chunks:
        assert_conforms("CreateChatCompletionStreamResponse", chunk)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    calls: dict[int, dict[str, Any]] = {}
    for fragment in (tc for d in deltas for tc in d.get("tool_calls", [])):
        call = calls.setdefault(fragment["index"], {"name": "", "arguments": ""})
        call["name"] += fragment["function"].get("name") or ""
        call["arguments"] += fragment["function"].get("arguments") or ""
    message = {
        "content": "".join(d.get("content") or "" for d in deltas),
        "calls": list(calls.values()),
    }
    return message, [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1]


async def test_a_call_cut_off_by_max_tokens_leaks_no_markup(
    replica: ClientFactory, tokenizer: PreTrainedTokenizerBase
) -> None:
    """Cut anywhere: finish_reason "length", no markup in content, nothing made up; a call
    whose name is whole is kept with its arguments as far as they go, streamed or not."""
    text = 'Let me look.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}'
    length = len(tokenizer.encode(text, add_special_tokens=False))
    async with replica(text=text + "\n</tool_call>") as (client, _):
        for max_tokens in range(1, length + 2):
            body = chat_body(tools=[WEATHER_TOOL], max_tokens=max_tokens)
            whole = (await client.post("/v1/chat/completions", json=body)).json()
            assert_conforms("CreateChatCompletionResponse", whole)
            body.update(stream=True)
            streamed, finish = streamed_message(
                (await client.post("/v1/chat/completions", json=body)).text
            )
            choice = whole["choices"][0]
            assert choice["finish_reason"] == finish == "length"
            message = choice["message"]
            content = message["content"] or ""
            assert content == streamed["content"]
            assert "Let me look.\n".startswith(content)
            calls = [
                {"name": c["function"]["name"], "arguments": c["function"]["arguments"]}
                for c in message.get("tool_calls") or []
            ]
            assert calls == streamed["calls"]
            for call in calls:
                assert call["name"] == "get_weather"
                assert '{"city": "Paris"}'.startswith(call["arguments"])


async def test_tool_choice_none_hides_tools_and_keeps_text(
    replica: ClientFactory, tokenizer: PreTrainedTokenizerBase
) -> None:
    async with replica(text=THOUGHT_AND_CALL) as (client, engine):
        body = chat_body(tools=[WEATHER_TOOL], tool_choice="none")
        response = await client.post("/v1/chat/completions", json=body)
    message = response.json()["choices"][0]["message"]
    assert "tool_calls" not in message
    assert "<tool_call>" in message["content"]
    # The template was rendered without tools: no tool instructions in the prompt.
    prompt = tokenizer.decode(engine.requests[0].prompt_token_ids)
    assert "get_weather" not in prompt


async def test_n_sequences_and_logprobs(replica: ClientFactory) -> None:
    body = chat_body(n=3, logprobs=True, top_logprobs=2, stream=True, seed=5)
    async with replica(text="One two three") as (client, engine):
        response = await client.post("/v1/chat/completions", json=body)
    chunks = sse_events(response.text)
    for chunk in chunks:
        assert_conforms("CreateChatCompletionStreamResponse", chunk)
    by_index: dict[int, str] = {0: "", 1: "", 2: ""}
    logprob_tokens = 0
    for chunk in chunks:
        for choice in chunk["choices"]:
            by_index[choice["index"]] += choice["delta"].get("content", "")
            if choice.get("logprobs"):
                for entry in choice["logprobs"]["content"]:
                    assert len(entry["top_logprobs"]) == 2
                    logprob_tokens += 1
    assert set(by_index.values()) == {"One two three"}
    assert logprob_tokens >= 3 * 3
    assert sorted(r.params.seed or 0 for r in engine.requests) == [5, 6, 7]


async def test_stop_string_across_tokens(replica: ClientFactory) -> None:
    async with replica(text="alpha beta gamma delta") as (client, engine):
        whole = await client.post("/v1/chat/completions", json=chat_body(stop=["a gam"]))
        streamed = await client.post(
            "/v1/chat/completions", json=chat_body(stop="a gam", stream=True)
        )
    assert whole.json()["choices"][0]["message"]["content"] == "alpha bet"
    text = "".join(
        c["choices"][0]["delta"].get("content", "")
        for c in sse_events(streamed.text)
        if c["choices"]
    )
    assert text == "alpha bet"
    assert len(engine.aborted) == 2  # the stop string closed the engine's streams early


async def test_thinking_off_renders_empty_think_block(replica: ClientFactory) -> None:
    body = chat_body(chat_template_kwargs={"enable_thinking": False})
    async with replica(text="Plain.") as (client, engine):
        response = await client.post("/v1/chat/completions", json=body)
    assert response.json()["choices"][0]["message"]["content"] == "Plain."
    assert engine.requests[0].prompt_token_ids[-4:] != []
    assert engine.requests[0].params.max_tokens == 4096 - len(engine.requests[0].prompt_token_ids)


async def test_max_tokens_gives_length(replica: ClientFactory) -> None:
    async with replica(text="one two three four five six") as (client, _):
        response = await client.post("/v1/chat/completions", json=chat_body(max_tokens=2))
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "length"
    assert response.json()["usage"]["completion_tokens"] == 2


async def test_client_disconnect_aborts_engine_request(replica: ClientFactory) -> None:
    async with replica(text="word " * 200, token_delay_s=0.01) as (client, engine):
        async with client.stream(
            "POST", "/v1/chat/completions", json=chat_body(stream=True)
        ) as response:
            async for line in response.aiter_lines():
                if '"content":"word' in line.replace(" ", ""):
                    break
        for _ in range(100):
            if engine.aborted:
                break
            await asyncio.sleep(0.01)
    assert engine.aborted
    assert engine.running == 0


async def test_models_health_metrics(replica: ClientFactory) -> None:
    async with replica() as (client, _):
        models = (await client.get("/v1/models")).json()
        assert_conforms("ListModelsResponse", models)
        assert models["data"][0]["id"] == MODEL
        assert (await client.get("/health")).json() == {"status": "ok"}
        await client.post("/v1/chat/completions", json=chat_body())
        metrics = (await client.get("/metrics")).text
    assert (
        'aiforge_replica_requests_total{endpoint="chat",model="qwen3-test",status="200"} 1.0'
        in metrics
    )
    assert "aiforge_replica_requests_running" in metrics
    assert "aiforge_replica_time_to_first_token_seconds_count" in metrics
