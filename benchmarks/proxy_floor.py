"""What a Python gateway's hop can cost at best: a bare asyncio proxy against aiforge's.

One run sets up, on the instant fake replica of ``gateway_wire.py``:

* **direct**: the client talks to the replica;
* **floor**: the leanest proxy this script can write on the same stack as aiforge's gateway
  (uvloop, an ``asyncio.Protocol`` per client connection, httptools on both sides, one
  pooled keep-alive connection per request to the replica, a task per request) and nothing
  else: no auth, limits, metering, routing, failover or error handling;
* **aiforge-bare**: ``aiforge serve --replica-url … --no-auth`` (no keys, limits or metering);
* **aiforge**: the same with the platform on (a key with every limit, the usage ledger).

The targets take turns in rounds, as in ``gateway_vs_litellm.py``, and the table gives the
latency each adds to direct and its CPU per request. The floor is a yardstick, not a
product: the gap between it and ``aiforge-bare`` is what the gateway's request path costs
beyond moving bytes. Run (~2 min; refuses above load 0.5 unless ``--force``):

    .venv/bin/python benchmarks/proxy_floor.py
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from gateway_latency import platform_key, wait_for_key
from gateway_vs_litellm import (
    MAX_LOAD,
    Target,
    measure_cell,
    render,
    replica_process,
    summarize,
)
from gateway_wire import MODEL, request_body

from aiforge.cluster.network import free_port
from aiforge.testing.server import RemoteAiforgeServer


def serve_floor(upstream_host: str, upstream_port: int, port: int) -> None:
    """The floor proxy, in this process, until killed."""
    import httptools
    import uvloop

    class Upstream(asyncio.Protocol):
        def __init__(self, idle: list[Upstream]) -> None:
            self.idle = idle
            self.parser = httptools.HttpResponseParser(self)
            self.body: list[bytes] = []
            self.done: Callable[[int, bytes], None] | None = None

        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            self.parser.feed_data(data)

        def on_body(self, body: bytes) -> None:
            self.body.append(body)

        def on_message_complete(self) -> None:
            done, self.done = self.done, None
            body, self.body = b"".join(self.body), []
            self.idle.append(self)
            assert done is not None
            done(self.parser.get_status_code(), body)

    class Front(asyncio.Protocol):
        def __init__(self, idle: list[Upstream]) -> None:
            self.idle = idle
            self.parser = httptools.HttpRequestParser(self)
            self.loop = asyncio.get_running_loop()
            self.body: list[bytes] = []
            self.url = b""

        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            self.parser.feed_data(data)

        def on_url(self, url: bytes) -> None:
            self.url = url

        def on_body(self, body: bytes) -> None:
            self.body.append(body)

        def on_message_complete(self) -> None:
            body, self.body = b"".join(self.body), []
            self.loop.create_task(self.forward(self.url, body))

        async def forward(self, url: bytes, body: bytes) -> None:
            if self.idle:
                upstream = self.idle.pop()
            else:
                _, upstream = await self.loop.create_connection(
                    lambda: Upstream(self.idle), upstream_host, upstream_port
                )
            answered: asyncio.Future[tuple[int, bytes]] = self.loop.create_future()
            upstream.done = lambda status, answer: answered.set_result((status, answer))
            upstream.transport.write(
                b"POST %b HTTP/1.1\r\nhost: replica\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\n\r\n%b" % (url, len(body), body)
            )
            status, answer = await answered
            self.transport.write(
                b"HTTP/1.1 %d OK\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\n\r\n%b" % (status, len(answer), answer)
            )

    async def main() -> None:
        idle: list[Upstream] = []
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: Front(idle), "127.0.0.1", port)
        print("ready", flush=True)
        await server.serve_forever()

    uvloop.run(main())


@contextlib.contextmanager
def floor_proxy(replica_url: str) -> Iterator[Target]:
    host, port = replica_url.removeprefix("http://").rsplit(":", 1)
    listen = free_port()
    argv = [sys.executable, __file__, "--serve-floor", host, port, str(listen)]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE)
    try:
        assert process.stdout is not None
        process.stdout.readline()
        yield Target("floor", f"http://127.0.0.1:{listen}", None, process.pid)
    finally:
        process.kill()
        process.wait()


@contextlib.contextmanager
def aiforge(replica_url: str, data_dir: Path, *, platform: bool) -> Iterator[Target]:
    args = ["--replica-url", replica_url] + ([] if platform else ["--no-auth"])
    server = RemoteAiforgeServer(MODEL, serve_args=args, data_dir=data_dir, startup_timeout_s=180.0)
    server.start()
    try:
        key = "unused"
        if platform:
            key = platform_key(server)
            wait_for_key(server.url, key)
        assert server.process is not None
        yield Target("aiforge" if platform else "aiforge-bare", server.url, key, server.process.pid)
    finally:
        server.stop()


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--serve-floor":
        serve_floor(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000, help="per target and cell")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per cell")
    parser.add_argument("--concurrency", type=lambda s: [int(c) for c in s.split(",")],
                        default=[1, 16])  # fmt: skip
    parser.add_argument("--force", action="store_true", help=f"run above load {MAX_LOAD}")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    if load > MAX_LOAD and not args.force:
        sys.exit(f"load average {load:.2f} > {MAX_LOAD}: the machine is busy (--force to run)")
    print(f"load average at the start: {load:.2f}")
    with (
        tempfile.TemporaryDirectory(prefix="aiforge-floor-") as tmp,
        replica_process() as url,
        floor_proxy(url) as floor,
        aiforge(url, Path(tmp) / "bare", platform=False) as bare,
        aiforge(url, Path(tmp) / "platform", platform=True) as full,
    ):
        targets = [Target("direct", url, None, None), floor, bare, full]

        async def run() -> None:
            body = request_body(stream=False)
            for concurrency in args.concurrency:
                cells = await measure_cell(targets, body, args.requests, concurrency, args.rounds)
                print(render(f"not streamed, concurrency {concurrency}", summarize(cells)))

        asyncio.run(run())
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
