"""The wire parts of the gateway benchmarks: an instant fake replica, a raw HTTP/1.1 client,
and the CPU time a server process tree has used.

* :func:`serve_replica` answers ``POST /v1/chat/completions`` at once — a fixed completion,
  or with ``"stream": true`` a fixed SSE stream of :data:`STREAM_TOKENS` content chunks
  (chunked transfer coding, one chunk per event, as vLLM and aiforge's replicas send them),
  honouring ``stream_options`` (``include_usage``: the final usage chunk;
  ``continuous_usage_stats``: usage on every chunk) — plus ``/v1/models`` and ``/health``.
  It runs in a process of its own (:func:`main`), so its CPU is nobody's overhead.
* :class:`Connection` is one keep-alive connection timing one request at a time (no HTTP
  library in the measurement); it reads a ``Content-Length`` or chunked body to its end.
* :func:`tree_cpu_seconds` reads ``/proc``: user + system seconds of a process and its
  descendants (and of children it already reaped), the quantity a saturated machine
  divides among requests.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import orjson

MODEL = "bench"
STREAM_TOKENS = 16
"""Content chunks in a streamed answer."""
PROMPT_TOKENS = 9

_HEALTH = b'{"status":"ok"}'
_MODELS = orjson.dumps({"object": "list", "data": [{"id": MODEL, "object": "model",
                                                     "owned_by": "bench"}]})  # fmt: skip


def request_body(*, stream: bool) -> bytes:
    """What the benchmark client sends: a short chat turn (streamed with the usage chunk)."""
    body: dict[str, object] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": STREAM_TOKENS,
    }
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return orjson.dumps(body)


def _usage(completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": completion_tokens,
            "total_tokens": PROMPT_TOKENS + completion_tokens}  # fmt: skip


def completion_body() -> bytes:
    """The non-streamed answer."""
    return orjson.dumps(
        {
            "id": "chatcmpl-bench", "object": "chat.completion", "created": 1, "model": MODEL,
            "choices": [{"index": 0, "finish_reason": "length", "logprobs": None,
                         "message": {"role": "assistant", "content": "hello " * STREAM_TOKENS}}],
            "usage": _usage(STREAM_TOKENS),
        }
    )  # fmt: skip


def stream_events(*, include_usage: bool, continuous_usage: bool) -> Iterator[bytes]:
    """The SSE events of the streamed answer, each ``data: ...\\n\\n``."""

    def event(delta: dict[str, str], finish: str | None, tokens: int) -> bytes:
        chunk: dict[str, object] = {
            "id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1,
            "model": MODEL,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }  # fmt: skip
        if continuous_usage:
            chunk["usage"] = _usage(tokens)
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    yield event({"role": "assistant", "content": ""}, None, 0)
    for n in range(1, STREAM_TOKENS + 1):
        yield event({"content": "hello "}, "length" if n == STREAM_TOKENS else None, n)
    if include_usage:
        final = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1,
                 "model": MODEL, "choices": [], "usage": _usage(STREAM_TOKENS)}  # fmt: skip
        yield b"data: " + orjson.dumps(final) + b"\n\n"
    yield b"data: [DONE]\n\n"


def _plain(body: bytes, status: str = "200 OK") -> bytes:
    head = (f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n")  # fmt: skip
    return head.encode() + body


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


_STREAM_HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n")  # fmt: skip
_COMPLETION = _plain(completion_body())
_STATIC = {b"/v1/models": _plain(_MODELS), b"/models": _plain(_MODELS),
           b"/health": _plain(_HEALTH)}  # fmt: skip
_STREAMS: dict[tuple[bool, bool], list[bytes]] = {
    (usage, continuous): [_chunk(e) for e in stream_events(include_usage=usage,
                                                           continuous_usage=continuous)]
    for usage in (False, True) for continuous in (False, True)
}  # fmt: skip


async def read_message(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One HTTP/1.1 message: ``(head, body)``; the body framed by Content-Length or chunked."""
    head = await reader.readuntil(b"\r\n\r\n")
    length, chunked = 0, False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if not chunked:
        return head, (await reader.readexactly(length) if length else b"")
    parts: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass
            return head, b"".join(parts)
        parts.append((await reader.readexactly(size + 2))[:-2])


async def _answer(writer: asyncio.StreamWriter, path: bytes, body: bytes) -> None:
    if path.endswith(b"/chat/completions"):
        request = orjson.loads(body) if body else {}
        if not request.get("stream"):
            writer.write(_COMPLETION)
            return
        options = request.get("stream_options") or {}
        usage = options.get("include_usage") is True
        continuous = usage and options.get("continuous_usage_stats") is True
        writer.write(_STREAM_HEAD)
        for chunk in _STREAMS[(usage, continuous)]:
            writer.write(chunk)
            await asyncio.sleep(0)  # one event at a time, as an engine sends them
        writer.write(b"0\r\n\r\n")
        return
    writer.write(_STATIC.get(path.split(b"?", 1)[0], _plain(b"{}", "404 Not Found")))


async def serve_replica(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer requests on one keep-alive connection until the peer closes it."""
    try:
        while True:
            head, body = await read_message(reader)
            await _answer(writer, head.split(b" ", 2)[1], body)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


class Connection:
    """A keep-alive HTTP/1.1 connection that times one POST at a time."""

    def __init__(self, url: str, path: str, body: bytes, key: str | None) -> None:
        authority = url.removeprefix("http://").rstrip("/")
        self.host, port = authority.rsplit(":", 1)
        self.port = int(port)
        auth = f"authorization: Bearer {key}\r\n" if key else ""
        self.request = (
            f"POST {path} HTTP/1.1\r\nhost: {authority}\r\n{auth}"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
        ).encode() + body

    async def __aenter__(self) -> Connection:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        return self

    async def __aexit__(self, *_: object) -> None:
        self.writer.close()

    async def time_one(self) -> tuple[float, bytes]:
        """Seconds from sending the request to the answer's last byte, and that answer's body
        (a RuntimeError unless it is a 200)."""
        start = time.perf_counter()
        self.writer.write(self.request)
        head, body = await read_message(self.reader)
        elapsed = time.perf_counter() - start
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"unexpected answer: {head[:80]!r} {body[:200]!r}")
        return elapsed, body


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid``, its live descendants and its reaped children."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, list[str]]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()  # fields from the 3rd (state) on
        stats[int(entry.name)] = (int(fields[1]), fields)
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        if current not in stats:
            continue
        fields = stats[current][1]
        # utime, stime, cutime, cstime are fields 14-17 (1-based): 11-14 here.
        total += sum(int(v) for v in fields[11:15])
        pending += [child for child, (ppid, _) in stats.items() if ppid == current]
    return total / tick


def _run_replica(port: int) -> None:
    async def serve() -> None:
        server = await asyncio.start_server(serve_replica, "127.0.0.1", port, backlog=1024)
        print(f"listening {server.sockets[0].getsockname()[1]}", flush=True)
        async with server:
            await server.serve_forever()

    try:
        import uvloop

        uvloop.run(serve())
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        asyncio.run(serve())


def main() -> None:
    parser = argparse.ArgumentParser(description="The instant fake replica, on its own.")
    parser.add_argument("--port", type=int, default=0)
    _run_replica(parser.parse_args().port)


if __name__ == "__main__":
    main()
