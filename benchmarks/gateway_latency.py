"""Latency the gateway hop adds to a non-streamed request, over real sockets.

A minimal asyncio HTTP/1.1 server stands in for the replica (a fixed chat completion, so no
engine time hides the gateway's), and real ``aiforge serve --replica-url`` processes sit in
front of it:

* **direct**: the client talks to the stand-in replica;
* **bare**: ``aiforge serve --no-auth`` (no keys, no limits, no metering);
* **platform**: ``aiforge serve`` with an API key that has every limit set (requests and
  tokens per minute, concurrency, day and month budgets) and the usage ledger on (journal +
  SQLite flusher).

The client is a raw keep-alive socket per worker (no HTTP library in the measurement).
Targets are interleaved in small batches (direct, bare, platform, direct, ...) so machine
noise hits all alike; the table shows p50/p99 per target and the added latency against
``direct`` for N sequential requests and for N requests from C concurrent workers. Run:

    .venv/bin/python benchmarks/gateway_latency.py --requests 2000 --concurrency 8
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import orjson

from aiforge.testing.server import RemoteAiforgeServer

MODEL = "bench"
BATCH = 50
"""Requests per target before switching to the next (interleaving)."""

_ANSWER = orjson.dumps(
    {
        "id": "chatcmpl-bench", "object": "chat.completion", "created": 1, "model": MODEL,
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "Hello there!"}}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12},
    }
)  # fmt: skip
_MODELS = orjson.dumps({"object": "list", "data": [{"id": MODEL, "object": "model"}]})
_HEALTH = b'{"status":"ok"}'
_BODY = orjson.dumps(
    {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}
)


# -- the stand-in replica -------------------------------------------------------------


def _response(body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


_ROUTES = {b"/v1/chat/completions": _response(_ANSWER), b"/v1/models": _response(_MODELS),
           b"/health": _response(_HEALTH)}  # fmt: skip


async def _read_message(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One HTTP/1.1 message with a Content-Length body: (head, body)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    return head, (await reader.readexactly(length) if length else b"")


async def _serve_replica(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head, _ = await _read_message(reader)
            path = head.split(b" ", 2)[1]
            writer.write(_ROUTES.get(path, _ROUTES[b"/health"]))
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


# -- the client -----------------------------------------------------------------------


class Connection:
    """A keep-alive HTTP/1.1 connection that times one POST at a time."""

    def __init__(self, url: str, key: str | None) -> None:
        self.host, port = url.removeprefix("http://").split(":")
        self.port = int(port)
        auth = f"authorization: Bearer {key}\r\n" if key else ""
        self.request = (
            f"POST /v1/chat/completions HTTP/1.1\r\nhost: {self.host}\r\n{auth}"
            f"content-type: application/json\r\ncontent-length: {len(_BODY)}\r\n\r\n"
        ).encode() + _BODY

    async def __aenter__(self) -> Connection:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        return self

    async def __aexit__(self, *_: object) -> None:
        self.writer.close()

    async def time_one(self) -> float:
        start = time.perf_counter()
        self.writer.write(self.request)
        head, _ = await _read_message(self.reader)
        elapsed = time.perf_counter() - start
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"unexpected answer: {head[:80]!r}")
        return elapsed


async def _batch(url: str, key: str | None, requests: int, concurrency: int) -> list[float]:
    async def worker(count: int) -> list[float]:
        async with Connection(url, key) as connection:
            return [await connection.time_one() for _ in range(count)]

    shares = [requests // concurrency + (i < requests % concurrency) for i in range(concurrency)]
    results = await asyncio.gather(*(worker(n) for n in shares if n))
    return [sample for result in results for sample in result]


async def measure(
    targets: dict[str, tuple[str, str | None]], requests: int, concurrency: int
) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {name: [] for name in targets}
    for url, key in targets.values():  # warm-up: connections, caches, first journal segment
        await _batch(url, key, 2 * BATCH, concurrency)
    done = 0
    while done < requests:
        size = min(BATCH, requests - done)
        for name, (url, key) in targets.items():
            samples[name] += await _batch(url, key, size, concurrency)
        done += size
    return samples


# -- the gateways ---------------------------------------------------------------------


def platform_key(server: RemoteAiforgeServer) -> str:
    limits = {"requests_per_minute": 10_000_000, "tokens_per_minute": 10_000_000_000,
              "max_concurrent": 10_000, "tokens_per_day": 10_000_000_000,
              "tokens_per_month": 10_000_000_000}  # fmt: skip
    headers = {"Authorization": f"Bearer {server.api_key}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=30.0) as http:
        org = http.post("/admin/v1/organizations", json={"name": "bench"}).json()
        project = http.post(
            "/admin/v1/projects", json={"name": "bench", "organization_id": org["id"]}
        ).json()
        key = http.post(
            f"/admin/v1/projects/{project['id']}/keys", json={"name": "bench", "role": "member"}
        ).json()
        http.put(f"/admin/v1/keys/{key['id']}/limits", json=limits).raise_for_status()
        project_limits = f"/admin/v1/projects/{project['id']}/limits"
        http.put(project_limits, json=limits).raise_for_status()
    secret: str = key["key"]
    return secret


def wait_for_key(url: str, key: str) -> None:
    with httpx.Client(timeout=5.0) as http:
        for _ in range(200):
            response = http.post(
                url + "/v1/chat/completions", content=_BODY,
                headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
            )  # fmt: skip
            if response.status_code == 200:
                return
            time.sleep(0.05)
    raise RuntimeError("the platform gateway never accepted the benchmark key")


def report(title: str, samples: dict[str, list[float]]) -> None:
    def pct(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000.0

    direct = samples["direct"]
    print(f"\n{title}")
    print(f"{'target':<10} {'n':>6} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} "
          f"{'+p50 ms':>8} {'+p99 ms':>8}")  # fmt: skip
    for name, values in samples.items():
        p50, p99 = pct(values, 0.5), pct(values, 0.99)
        print(f"{name:<10} {len(values):>6} {p50:>8.3f} {p99:>8.3f} "
              f"{statistics.fmean(values) * 1000:>8.3f} {p50 - pct(direct, 0.5):>8.3f} "
              f"{p99 - pct(direct, 0.99):>8.3f}")  # fmt: skip


async def run(requests: int, concurrency: int, gateways: Sequence[str]) -> None:
    replica = await asyncio.start_server(_serve_replica, "127.0.0.1", 0)
    port = replica.sockets[0].getsockname()[1]
    replica_url = f"http://127.0.0.1:{port}"
    targets: dict[str, tuple[str, str | None]] = {"direct": (replica_url, None)}
    servers: list[RemoteAiforgeServer] = []
    try:
        with tempfile.TemporaryDirectory(prefix="aiforge-bench-") as tmp:
            for name in gateways:
                args = ["--replica-url", replica_url] + (["--no-auth"] if name == "bare" else [])
                server = RemoteAiforgeServer(
                    MODEL, serve_args=args, data_dir=Path(tmp) / name, startup_timeout_s=120.0
                )
                await asyncio.to_thread(server.start)
                servers.append(server)
                key = None
                if name == "platform":
                    key = await asyncio.to_thread(platform_key, server)
                    await asyncio.to_thread(wait_for_key, server.url, key)
                targets[name] = (server.url, key)
            report(f"{requests} sequential requests", await measure(targets, requests, 1))
            report(
                f"{requests} requests from {concurrency} concurrent connections",
                await measure(targets, requests, concurrency),
            )
    finally:
        for server in servers:
            server.stop()
        replica.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--gateways", nargs="*", default=["bare", "platform"])
    args = parser.parse_args()
    asyncio.run(run(args.requests, args.concurrency, args.gateways))


if __name__ == "__main__":
    main()
