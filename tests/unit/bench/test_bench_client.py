"""The timing client against the paced fake server (real sockets on 127.0.0.1) and
against hand-written responses for the ways a server can break."""

import json
import statistics
import time
from collections.abc import Iterator

import httpx
import pytest

from aiforge.bench.client import BenchClient, Endpoint, request_body
from aiforge.bench.fake_server import Pace, paced_openai_app, serving_in_thread
from aiforge.bench.source import BenchRequest
from aiforge.bench.stats import RequestSample

TTFT, ITL = 0.15, 0.03
CHAT = BenchRequest(0, 6, messages=[{"role": "user", "content": "hi"}])
TEXT = BenchRequest(1, 6, prompt="hi")


@pytest.fixture(scope="module")
def paced() -> Iterator[tuple[str, Pace]]:
    pace = Pace(ttft_s=TTFT, itl_s=ITL)
    with serving_in_thread(paced_openai_app(pace)) as url:
        yield url + "/v1", pace


def endpoint(url: str, **changes: object) -> Endpoint:
    return Endpoint(url, "paced", "sk-test", **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(("api", "request_"), [("chat", CHAT), ("completions", TEXT)])
async def test_a_stream_is_timed_as_the_server_paced_it(
    paced: tuple[str, Pace], api: str, request_: BenchRequest
) -> None:
    url, _ = paced
    origin = time.perf_counter()
    async with BenchClient(endpoint(url, api=api)) as client:
        sample, answer = await client.send(request_, origin=origin, scheduled_s=0.0)
    assert sample.ok, sample.error
    assert answer == " tok" * 6
    assert sample.output_tokens == 6
    assert sample.tokens_from == "usage"
    assert sample.prompt_tokens is not None
    assert sample.ttft_s is not None
    assert TTFT <= sample.ttft_s < TTFT + 0.25
    assert len(sample.itl_s) == 5
    # One gap may shrink when a busy machine delivers two chunks together; their sum may not.
    assert 3 * ITL <= sum(sample.itl_s) < 4 * ITL + 0.5
    assert ITL / 2 <= statistics.median(sample.itl_s) < ITL + 0.1
    assert TTFT + 5 * ITL <= sample.e2e_s < TTFT + 5 * ITL + 0.5
    assert 0.0 <= sample.start_s < 0.5
    assert sample.scheduled_s == 0.0


async def test_without_streaming_only_the_whole_time_is_known(paced: tuple[str, Pace]) -> None:
    url, _ = paced
    async with BenchClient(endpoint(url, stream=False)) as client:
        sample, answer = await client.send(CHAT, origin=time.perf_counter())
    assert sample.ok, sample.error
    assert sample.ttft_s is None
    assert sample.itl_s == ()
    assert sample.output_tokens == 6
    assert answer == " tok" * 6
    assert sample.e2e_s >= TTFT + 5 * ITL


async def test_a_500_becomes_an_error_sample(paced: tuple[str, Pace]) -> None:
    url, pace = paced
    pace.fail_every = 1
    try:
        async with BenchClient(endpoint(url)) as client:
            sample, answer = await client.send(CHAT, origin=time.perf_counter())
    finally:
        pace.fail_every = 0
    assert not sample.ok
    assert sample.error == "HTTP 500: paced fake: planned failure"
    assert answer == ""
    assert sample.ttft_s is None


async def test_a_refused_connection_and_a_timeout_are_errors_not_exceptions(
    paced: tuple[str, Pace],
) -> None:
    async with BenchClient(endpoint("http://127.0.0.1:9/v1")) as client:
        sample, _ = await client.send(CHAT, origin=time.perf_counter())
    assert sample.error is not None
    assert sample.error.startswith("ConnectError")
    url, _ = paced
    async with BenchClient(endpoint(url, timeout_s=0.05)) as client:
        sample, _ = await client.send(CHAT, origin=time.perf_counter())
    assert sample.error == "timeout after 0.05s"


def test_request_bodies() -> None:
    body = request_body(
        endpoint("u", ignore_eos=True, temperature=0.0, extra_body={"top_k": 1}), CHAT
    )
    assert body == {
        "model": "paced", "max_tokens": 6, "messages": CHAT.messages, "stream": True,
        "stream_options": {"include_usage": True}, "ignore_eos": True, "temperature": 0.0,
        "top_k": 1,
    }  # fmt: skip
    assert request_body(endpoint("u", api="completions", stream=False), TEXT) == {
        "model": "paced", "max_tokens": 6, "prompt": "hi",
    }  # fmt: skip
    with pytest.raises(ValueError, match="needs a prompt"):
        request_body(endpoint("u", api="completions"), CHAT)


def sse(*events: object, done: bool = True) -> bytes:
    lines = [f"data: {json.dumps(e)}\n\n" for e in events]
    return ("".join(lines) + ("data: [DONE]\n\n" if done else "")).encode()


def delta(text: str, key: str = "content") -> dict[str, object]:
    return {"choices": [{"index": 0, "delta": {key: text}, "finish_reason": None}]}


async def answer_with(body: bytes, status: int = 200) -> tuple[RequestSample, str]:
    transport = httpx.MockTransport(lambda request: httpx.Response(status, content=body))
    async with BenchClient(endpoint("http://fake/v1"), transport=transport) as client:
        return await client.send(CHAT, origin=time.perf_counter())


async def test_reasoning_counts_as_generated_text_and_chunks_stand_in_for_usage() -> None:
    sample, answer = await answer_with(
        sse(
            delta("", "content"),
            delta("think", "reasoning_content"),
            delta("ing", "reasoning"),
            delta("!"),
        )
    )
    assert sample.ok
    assert answer == "thinking!"
    assert sample.output_tokens == 3
    assert sample.tokens_from == "chunks"
    assert len(sample.itl_s) == 2


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        (sse(delta("a"), {"error": {"message": "engine died"}}), 200, "stream error: engine died"),
        (sse(delta("a"), done=False), 200, "the stream ended without [DONE]"),
        (b"data: {not json\n\n", 200, "not JSON"),
        (b"upstream down", 502, "HTTP 502: upstream down"),
        (json.dumps({"detail": "nope"}).encode(), 404, "HTTP 404: {'detail': 'nope'}"),
    ],
)
async def test_broken_answers_are_errors(body: bytes, status: int, error: str) -> None:
    sample, answer = await answer_with(body, status)
    assert sample.error is not None
    assert sample.error.startswith(error)
    assert answer == ""
