"""Run aiforge servers in tests: a real ``aiforge serve`` subprocess, or an ASGI app in-loop.

:class:`RemoteAiforgeServer` is aiforge's ``RemoteOpenAIServer``: it starts the real
command on a free port with a temporary data dir, waits for ``/health``, hands out official
``openai`` clients and stops the process group on exit. Extra CLI arguments and environment
variables pass through, so platform tests can run several gateways against one Redis, attach
gateways to a shared replica (``--replica-url``) or SIGKILL one and restart it on the same
data dir.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import openai
import uvicorn

from aiforge.cluster.network import free_port as free_port  # re-exported for tests
from aiforge.cluster.runtimes.local import read_log_tail

CLI_MODULE = "aiforge.cli"
"""Run as ``python -m aiforge.cli serve ...``: exactly the ``aiforge serve`` command."""


class ServerStartError(RuntimeError):
    pass


class RemoteAiforgeServer:
    """``aiforge serve`` as a subprocess. Use as a context manager, or call start()/stop()."""

    def __init__(
        self,
        model: str | Path,
        *,
        engine: str = "transformers",
        serve_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        data_dir: Path | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        api_key: str | None = None,
        startup_timeout_s: float = 300.0,
    ) -> None:
        self.model = str(model)
        self.engine = engine
        self.serve_args = tuple(serve_args)
        self.host = host
        self.port = port or free_port(host)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="aiforge-test-")
            data_dir = Path(self._tmp.name)
        self.data_dir = data_dir
        self.api_key = api_key or f"sk-test-{secrets.token_hex(16)}"
        """Passed as ``AIFORGE_ADMIN_KEY``: the admin key when the platform is on."""
        self.extra_env = dict(env or {})
        self.startup_timeout_s = startup_timeout_s
        self.log_path = self.data_dir / "serve.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._clients: list[openai.OpenAI] = []
        """Clients handed out, closed with the server (their sockets must not outlive it)."""

    # -- lifecycle ------------------------------------------------------------
    def argv(self) -> list[str]:
        return [
            sys.executable, "-m", CLI_MODULE, "serve", "--model", self.model,
            "--engine", self.engine, "--host", self.host, "--port", str(self.port),
            "--data-dir", str(self.data_dir),
            *self.serve_args,
        ]  # fmt: skip

    def start(self) -> RemoteAiforgeServer:
        """Start the server and wait until ``/health`` answers 200."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "AIFORGE_ADMIN_KEY": self.api_key, "PYTHONUNBUFFERED": "1",
               **self.extra_env}  # fmt: skip
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=env, start_new_session=True,
            )  # fmt: skip
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise ServerStartError(
                        f"aiforge serve exited with {self.process.returncode}:\n{self.log_tail()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(self.url_for("health")).status_code == 200:
                        return
                time.sleep(0.25)
        raise ServerStartError(
            f"aiforge serve was not healthy after {self.startup_timeout_s:.0f}s:\n{self.log_tail()}"
        )

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM the server's process group (it stops its replica), SIGKILL after grace."""
        process = self.process
        if process is not None and process.poll() is None:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                _signal_group(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        if process is not None:
            _signal_group(process.pid, signal.SIGKILL)  # leftovers, if any
        while self._clients:
            self._clients.pop().close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def kill(self) -> None:
        """SIGKILL the gateway process only (a crash); its replica keeps running until stop()."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def __enter__(self) -> RemoteAiforgeServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        self.stop()

    # -- access ---------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI base URL (``.../v1``)."""
        return self.url + "/v1"

    def url_for(self, *parts: str) -> str:
        return "/".join([self.url, *(p.strip("/") for p in parts)])

    def client(self, **kwargs: Any) -> openai.OpenAI:
        """An official client for this server; closed when the server stops."""
        kwargs.setdefault("max_retries", 0)
        kwargs.setdefault("timeout", 120.0)
        client = openai.OpenAI(base_url=self.base_url, api_key=self.api_key, **kwargs)
        self._clients.append(client)
        return client

    def async_client(self, **kwargs: Any) -> openai.AsyncOpenAI:
        kwargs.setdefault("max_retries", 0)
        kwargs.setdefault("timeout", 120.0)
        return openai.AsyncOpenAI(base_url=self.base_url, api_key=self.api_key, **kwargs)

    def health(self) -> dict[str, Any]:
        response = httpx.get(self.url_for("health"), timeout=5.0)
        body: dict[str, Any] = response.json()
        return body

    def replicas(self) -> list[dict[str, Any]]:
        """Every replica of every deployment, as ``/health`` lists them."""
        return [r for d in self.health().get("deployments", []) for r in d.get("replicas", [])]

    def log_tail(self, lines: int = 60) -> str:
        return read_log_tail(self.log_path, lines)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


@contextlib.asynccontextmanager
async def running_app(
    app: Any, host: str = "127.0.0.1", http: Any = "auto", **options: Any
) -> AsyncIterator[str]:
    """Serve an ASGI app with uvicorn inside the current event loop on a free port.

    Yields its base URL; stops it on exit. For tests that need real sockets (streaming,
    client disconnects) without a subprocess. ``http``: uvicorn's HTTP protocol (the
    gateway's front: :func:`aiforge.gateway.front.protocol.front_protocol`); ``options``: more
    ``uvicorn.Config`` settings.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, log_level="warning", ws="none", lifespan="on", http=http, **options
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()
