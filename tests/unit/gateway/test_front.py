"""The gateway's own HTTP/1.1 front: the heads it reads mean what llhttp reads in them, and
on a connection it answers inference requests itself, hands anything else to uvicorn, and
keeps HTTP's rules (pipelining, ``Connection: close``, keep-alive timeout, uploads)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from typing import Any

import httptools
import orjson
import pytest
from gateway_fakes import KEY as SECRET
from gateway_fakes import MODEL, Gateway

from aiforge.gateway.front.head import HEAD_END, read_head, request_line_may_match
from aiforge.gateway.front.protocol import front_protocol
from aiforge.gateway.request_id import HEADER, INFERENCE_ROUTES, InferenceFastPath
from aiforge.testing.server import running_app

BODY = orjson.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
KEY = f"Bearer {SECRET}"


def request(
    body: bytes = BODY, path: str = "/v1/chat/completions", extra: bytes = b"", key: str = KEY
) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        f"authorization: {key}\r\ncontent-length: {len(body)}\r\n".encode()
        + extra + b"\r\n" + body
    )  # fmt: skip


# -- reading heads ----------------------------------------------------------------------------

PLAIN = request()
VARIANTS = [
    PLAIN,
    PLAIN.replace(b"host: x", b"Host:x"),
    PLAIN.replace(b"host: x", b"host: x \t"),
    PLAIN.replace(b"host: x", b"X-Odd: a\tb"),
    PLAIN.replace(b"host: x", b"connection: close"),
    PLAIN.replace(b"host: x", b"x-session-id: caf\xe9"),
    PLAIN.replace(b"host: x", b"x-empty:"),
]
REFUSED = [
    PLAIN.replace(b"POST", b"GET"),
    PLAIN.replace(b"HTTP/1.1", b"HTTP/1.0"),
    PLAIN.replace(b"completions HTTP", b"completions?x=1 HTTP"),
    PLAIN.replace(b"/v1/chat/completions", b"/v1/chat/completions/"),
    PLAIN.replace(b"POST /v1", b"POST  /v1"),
    PLAIN.replace(b"host: x", b"host : x"),
    PLAIN.replace(b"host: x", b" host: x"),
    PLAIN.replace(b"host: x\r\n", b"host: x\r\n folded\r\n"),
    PLAIN.replace(b"host: x", b"ho(st: x"),
    PLAIN.replace(b"host: x", b"host: x\x00"),
    PLAIN.replace(b"host: x", b"host: x\ry"),
    PLAIN.replace(b"host: x", b"host: x\ny"),
    PLAIN.replace(b"host: x", b"host x"),
    PLAIN.replace(b"host: x", b"transfer-encoding: chunked"),
    PLAIN.replace(b"host: x", b"Transfer-Encoding: identity"),
    PLAIN.replace(b"host: x", b"expect: 100-continue"),
    PLAIN.replace(b"host: x", b"upgrade: websocket"),
    PLAIN.replace(b"host: x", b"content-length: 3"),
    PLAIN.replace(b"host: x", b"Content-Length: %d" % len(BODY)),
    PLAIN.replace(b"content-length: ", b"content-length: +"),
    PLAIN.replace(b"content-length: ", b"content-length: 0x"),
    PLAIN.replace(b"content-length: ", b"content-length: \xd9\xa1"),
    PLAIN.replace(b"content-length: %d\r\n" % len(BODY), b""),
]


def _read(data: bytes) -> Any:
    return read_head(data, data.find(HEAD_END), INFERENCE_ROUTES)


def test_a_plain_inference_request_is_read_with_its_framing() -> None:
    head = _read(PLAIN)
    assert head is not None
    assert (head.path, head.kind, head.content_length, head.keep_alive) == (
        "/v1/chat/completions", "chat", len(BODY), True)  # fmt: skip
    assert PLAIN[head.size :] == BODY
    assert head.headers["authorization"] == KEY
    assert _read(PLAIN.replace(b"host: x", b"connection: Close")).keep_alive is False


@pytest.mark.parametrize("data", REFUSED, ids=range(len(REFUSED)))
def test_anything_but_the_plain_form_goes_to_uvicorn(data: bytes) -> None:
    assert _read(data) is None


class _Llhttp:
    """What uvicorn's parser (llhttp, through httptools) reads in a request."""

    def __init__(self) -> None:
        self.headers: dict[str, str] = {}
        self.url = b""
        self.body = b""
        self.complete = False
        self.keep_alive: bool | None = None
        self.parser: Any = None

    def on_headers_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.complete = True


def _mutations() -> list[bytes]:
    """Heads near the plain one: every variant, and each with one byte of the head changed
    to a character that matters to HTTP framing."""
    found = list(VARIANTS) + list(REFUSED)
    for base, at, byte in itertools.product(VARIANTS, range(0, 160, 2), b" :\t\r\n\x00aA1-"):
        end = base.find(HEAD_END)
        if at < end:
            found.append(base[:at] + bytes([byte]) + base[at + 1 :])
    return found


def test_every_head_read_here_means_the_same_to_llhttp() -> None:
    """The class of request smuggling between the front and uvicorn: whatever the front
    accepts, llhttp parses without error into the same route, headers and body."""
    accepted = 0
    for data in _mutations():
        head = _read(data)
        if head is None or len(data) < head.size + head.content_length:
            continue  # refused, or both wait for more of the body
        accepted += 1
        parsed = _Llhttp()
        parser = parsed.parser = httptools.HttpRequestParser(parsed)
        parser.feed_data(data[: head.size + head.content_length])  # one request, as framed here
        assert parsed.complete, data
        assert parser.get_method() == b"POST"
        assert parsed.url.decode("latin-1") == head.path
        assert parsed.body == data[head.size : head.size + head.content_length]
        assert {k: v.strip(" \t") for k, v in parsed.headers.items()} == head.headers, data
        assert parsed.keep_alive == head.keep_alive
    assert accepted > len(VARIANTS)


def test_the_request_line_is_judged_as_soon_as_it_cannot_match() -> None:
    assert request_line_may_match(b"PO", INFERENCE_ROUTES)
    assert request_line_may_match(b"POST /v1/chat/comp", INFERENCE_ROUTES)
    assert request_line_may_match(b"POST /v1/embeddings HTTP/1.1\r\nhost", INFERENCE_ROUTES)
    assert not request_line_may_match(b"GET ", INFERENCE_ROUTES)
    assert not request_line_may_match(b"POST /v1/models", INFERENCE_ROUTES)
    assert not request_line_may_match(b"POST /v1/embeddings HTTP/1.0\r\n", INFERENCE_ROUTES)


# -- on a connection --------------------------------------------------------------------------


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(HEAD_END)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        return status, headers, await reader.readexactly(int(headers["content-length"]))
    body = b""
    while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
        body += (await reader.readexactly(size + 2))[:-2]
    await reader.readuntil(b"\r\n")
    return status, headers, body


@contextlib.asynccontextmanager
async def connection(url: str) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        yield reader, writer
    finally:
        writer.close()


async def test_pipelined_requests_are_answered_in_order(gateway: Gateway) -> None:
    embed = orjson.dumps({"model": MODEL, "input": "x"})
    async with connection(gateway.url) as (reader, writer):
        writer.write(request() + request(embed, "/v1/embeddings") + request())
        answers = [await read_response(reader) for _ in range(3)]
    assert [status for status, _, _ in answers] == [200, 200, 200]
    assert [orjson.loads(body)["object"] for _, _, body in answers] == [
        "chat.completion", "list", "chat.completion"]  # fmt: skip
    ids = [headers[HEADER] for _, headers, _ in answers]
    assert len(set(ids)) == 3
    events = await gateway.usage.wait_for(3)
    assert {event.request_id for event in events} == set(ids)


async def test_other_requests_hand_the_connection_to_uvicorn(gateway: Gateway) -> None:
    async with connection(gateway.url) as (reader, writer):
        writer.write(request())
        first = await read_response(reader)
        writer.write(b"GET /v1/models HTTP/1.1\r\nhost: x\r\nauthorization: " + KEY.encode()
                     + b"\r\n\r\n" + request())  # fmt: skip
        models = await read_response(reader)
        after = await read_response(reader)  # served by uvicorn now, same answer
    assert first[0] == models[0] == after[0] == 200
    assert [m["id"] for m in orjson.loads(models[2])["data"]] == [MODEL]
    assert orjson.loads(after[2])["object"] == "chat.completion"
    assert after[1][HEADER].startswith("req-")


async def test_uploads_the_front_does_not_read_are_answered_by_uvicorn(gateway: Gateway) -> None:
    chunked = request(extra=b"transfer-encoding: chunked\r\n").replace(
        b"content-length: %d\r\n" % len(BODY), b""
    )
    chunked = chunked.replace(b"\r\n\r\n" + BODY, b"\r\n\r\n%x\r\n%b\r\n0\r\n\r\n" % (
        len(BODY), BODY))  # fmt: skip
    big = orjson.dumps({"model": MODEL, "prompt": "x" * 5000})  # over the fixture's 4096
    async with connection(gateway.url) as (reader, writer):
        writer.write(chunked)
        assert (await read_response(reader))[0] == 200
    async with connection(gateway.url) as (reader, writer):
        writer.write(request(big))
        status, headers, body = await read_response(reader)
    assert status == 413
    assert orjson.loads(body)["error"]["code"] == "request_too_large"
    assert headers[HEADER].startswith("req-")


async def test_a_request_that_asks_to_close_is_answered_then_closed(gateway: Gateway) -> None:
    async with connection(gateway.url) as (reader, writer):
        writer.write(request(extra=b"connection: close\r\n"))
        status, headers, _ = await read_response(reader)
        assert await reader.read() == b""
    assert status == 200
    assert headers["connection"] == "close"


async def test_refusals_and_answers_carry_the_request_id(gateway: Gateway) -> None:
    async with connection(gateway.url) as (reader, writer):
        writer.write(request(key="Bearer sk-wrong") + request(b"{not json"))
        refused = await read_response(reader)
        malformed = await read_response(reader)
    assert refused[0] == 401
    assert orjson.loads(refused[2])["error"]["code"] == "invalid_api_key"
    assert malformed[0] == 400
    assert orjson.loads(malformed[2])["error"]["code"] == "invalid_json"
    assert refused[1][HEADER] != malformed[1][HEADER]


async def test_a_client_that_leaves_mid_upload_is_recorded_once(gateway: Gateway) -> None:
    async with connection(gateway.url) as (_, writer):
        writer.write(request()[:-5])
        await writer.drain()
        await asyncio.sleep(0.05)
    (event,) = await gateway.usage.wait_for(1)
    assert (event.status_code, event.cancelled, event.error_type) == (499, True, "cancelled")
    assert gateway.replica_app.state.bodies == []


async def test_a_failure_of_the_gateway_is_a_500_envelope_and_the_connection_lives_on(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    handler = gateway.app.state.handler
    answer = handler.answer
    calls = 0

    async def fails_once(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug")
        return await answer(*args)

    monkeypatch.setattr(handler, "answer", fails_once)
    async with connection(gateway.url) as (reader, writer):
        writer.write(request() + request())
        failed = await read_response(reader)
        answered = await read_response(reader)
    assert failed[0] == 500
    assert orjson.loads(failed[2])["error"]["code"] == "gateway_error"
    assert failed[1][HEADER].startswith("req-")
    assert answered[0] == 200


async def test_an_idle_connection_is_closed_after_the_keep_alive_timeout(
    gateway: Gateway,
) -> None:
    app = gateway.app
    front = front_protocol(app.state.handler, max_body_bytes=4096)
    async with (
        running_app(InferenceFastPath(app), http=front, timeout_keep_alive=1) as url,
        connection(url) as (reader, writer),
    ):
        writer.write(request())
        assert (await read_response(reader))[0] == 200
        started = asyncio.get_running_loop().time()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        waited = asyncio.get_running_loop().time() - started
    assert 0.5 < waited < 3.0


async def test_a_stream_is_relayed_in_chunks_and_a_client_leaving_it_is_metered_once(
    gateway: Gateway,
) -> None:
    words = " ".join(["w"] * 40)
    body = orjson.dumps({"model": MODEL, "prompt": words, "stream": True, "delay_s": 0.05})
    async with connection(gateway.url) as (reader, writer):
        writer.write(request(body))
        head = await reader.readuntil(HEAD_END)
        assert b"transfer-encoding: chunked" in head
        assert b"text/event-stream" in head
        await reader.readuntil(b'"content":"w ')
        await reader.readuntil(b'"content":"w ')
    (event,) = await gateway.usage.wait_for(1)
    assert event.cancelled
    assert event.completion_tokens < 40
    await asyncio.sleep(0.2)
    assert len(gateway.usage.events) == 1
    assert gateway.fleet.directory.in_flight(MODEL, "r0") == 0


async def test_a_large_body_is_not_read_before_its_key_is_checked(gateway: Gateway) -> None:
    """The front reads small bodies whole before the handler sees them; a large one goes to
    uvicorn, which refuses a bad key having read only the start of it."""
    front = front_protocol(gateway.app.state.handler, max_body_bytes=1 << 20)
    async with (
        running_app(InferenceFastPath(gateway.app), http=front) as url,
        connection(url) as (reader, writer),
    ):
        writer.write(request(b"x" * 300_000, key="Bearer sk-wrong")[:2000])
        status, headers, body = await asyncio.wait_for(read_response(reader), 5)
    assert status == 401
    assert orjson.loads(body)["error"]["code"] == "invalid_api_key"
    assert headers[HEADER].startswith("req-")


async def test_a_request_sent_a_byte_at_a_time_is_answered(gateway: Gateway) -> None:
    async with connection(gateway.url) as (reader, writer):
        for byte in request():
            writer.write(bytes([byte]))
            await writer.drain()
        status, _, body = await read_response(reader)
    assert status == 200
    assert orjson.loads(body)["object"] == "chat.completion"


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40,  # a TLS hello
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: -1\r\n\r\n",
        b"GARBAGE\r\n\r\n",
    ],
    ids=["tls", "negative-length", "garbage"],
)
async def test_what_is_not_http_goes_to_uvicorn_and_the_gateway_lives_on(
    gateway: Gateway, garbage: bytes
) -> None:
    async with connection(gateway.url) as (reader, writer):
        writer.write(garbage)
        answer = await asyncio.wait_for(reader.read(65536), 5)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 4")
    async with connection(gateway.url) as (reader, writer):
        writer.write(request())
        assert (await read_response(reader))[0] == 200


async def test_an_inference_head_that_does_not_end_is_a_431(gateway: Gateway) -> None:
    async with connection(gateway.url) as (reader, writer):
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nx-long: " + b"a" * 20_000)
        status, headers, body = await asyncio.wait_for(read_response(reader), 5)
        assert await reader.read() == b""
    assert status == 431
    assert orjson.loads(body)["error"]["code"] == "request_header_fields_too_large"
    assert headers[HEADER].startswith("req-")
