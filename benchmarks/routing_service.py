"""The service side of ``benchmarks/routing.py``: ``aiforge serve``, its admin API, and
the vLLM replicas' own routes (prefix-cache reset, metrics).

Blocking helpers (process start and stop, admin calls, waits) use ``time.sleep`` and
``httpx`` directly: the benchmark calls them between measured phases, never during one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
from routing_stats import CacheCounters, cache_counters

from aiforge.cluster.network import free_port
from aiforge.cluster.runtimes.local import read_log_tail

__all__ = [
    "SERVED_NAME",
    "Service",
    "cpu_binding",
    "deploy",
    "read_counters",
    "reset_prefix_caches",
    "serving",
    "set_policy",
    "wait_ready",
    "warm_up",
]

SERVED_NAME = "routing-bench"
"""The deployment's name: the model name clients send."""

Progress = Callable[[str], None]


@dataclass
class Service:
    """A running ``aiforge serve`` and its admin API."""

    url: str
    api_key: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    progress: Progress

    @property
    def log_path(self) -> Path:
        return self.data_dir / "serve.log"

    def admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = httpx.request(
            method, f"{self.url}/admin/v1/deployments/{SERVED_NAME}{path}", json=body,
            headers={"Authorization": f"Bearer {self.api_key}"}, timeout=30.0,
        )  # fmt: skip
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {path or '/'}: {response.status_code} {response.text}")
        return response.json()

    def replicas(self) -> list[dict[str, Any]]:
        replicas: list[dict[str, Any]] = self.admin("GET", "")["replicas"]
        return replicas

    def health(self) -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(f"{self.url}/health", timeout=10.0).json()
        return body

    def failure(self, what: str) -> RuntimeError:
        return RuntimeError(
            f"{what}; aiforge serve's log ends:\n{read_log_tail(self.log_path, 40)}"
        )


@contextlib.contextmanager
def serving(model: Path, keep: Path | None, progress: Progress) -> Iterator[Service]:
    """``aiforge serve`` with the deployment declared at 0 replicas; stopped (with its
    replicas) on exit. Replicas inherit ``VLLM_SERVER_DEV_MODE=1``: /reset_prefix_cache."""
    with _data_dir(keep) as data_dir:
        port = free_port()
        api_key = "sk-bench-" + secrets.token_urlsafe(24)
        argv = [
            sys.executable, "-m", "aiforge.cli", "serve", "--model", str(model),
            "--engine", "vllm", "--served-model-name", SERVED_NAME, "--replicas", "0",
            "--port", str(port), "--data-dir", str(data_dir),
        ]  # fmt: skip
        env = {**os.environ, "AIFORGE_ADMIN_KEY": api_key, "PYTHONUNBUFFERED": "1",
               "VLLM_SERVER_DEV_MODE": "1"}  # fmt: skip
        with (data_dir / "serve.log").open("ab") as log:
            process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                start_new_session=True,
            )  # fmt: skip
        service = Service(f"http://127.0.0.1:{port}", api_key, data_dir, process, progress)
        try:
            _wait_listening(service)
            yield service
        finally:
            _stop(service)


@contextlib.contextmanager
def _data_dir(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    with tempfile.TemporaryDirectory(prefix="aiforge-routing-") as tmp:
        yield Path(tmp)


def _wait_listening(service: Service, timeout_s: float = 300.0) -> None:
    """Until the gateway answers ``/health`` at all (503 is fine: no replica yet)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise service.failure("aiforge serve exited")
        with contextlib.suppress(httpx.HTTPError, ValueError):
            service.health()
            return
        time.sleep(0.5)
    raise service.failure(f"aiforge serve did not listen within {timeout_s:.0f} s")


def _stop(service: Service, grace_s: float = 90.0) -> None:
    """SIGTERM the service's process group (it drains and stops its replicas), then KILL."""
    process = service.process
    if process.poll() is None:
        service.progress("stopping aiforge serve and its replicas")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # leftovers, if any
    process.wait(timeout=10)


def deploy(service: Service, **spec: Any) -> None:
    """Declare the benchmark's deployment: ``spec`` holds a deployment's fields (the admin
    API's ``PUT`` body: model, engine, replicas, policy, engine_args…)."""
    service.admin("PUT", "", spec)
    shown = ", ".join(f"{key} {value}" for key, value in spec.items())
    service.progress(f"deployment {SERVED_NAME}: {shown}")


def wait_ready(service: Service, count: int, timeout_s: float) -> list[dict[str, Any]]:
    """The deployment's replicas once ``count`` are ready; a line whenever states change."""
    started = time.monotonic()
    shown = ""
    while time.monotonic() - started < timeout_s:
        if service.process.poll() is not None:
            raise service.failure("aiforge serve exited")
        replicas = service.replicas()
        ready = [r for r in replicas if r["state"] == "ready"]
        states = ", ".join(f"{r['id']} {r['state']}" for r in replicas) or "none yet"
        if states != shown:
            service.progress(f"replicas after {time.monotonic() - started:.0f} s: {states}")
            shown = states
        failed = [r for r in replicas if r["state"] == "failed"]
        if failed:
            raise service.failure(f"replica {failed[0]['id']} failed: {failed[0]['last_error']}")
        if len(ready) >= count and len(replicas) == count:
            return ready
        time.sleep(2.0)
    raise service.failure(f"{count} replicas not ready after {timeout_s:.0f} s")


def set_policy(service: Service, policy: str) -> None:
    """Switch the policy in place and wait until the controller serves it (one tick)."""
    service.admin("PATCH", "", {"policy": policy})
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline:
        deployments = service.health().get("deployments", [])
        if any(d["name"] == SERVED_NAME and d["spec"]["policy"] == policy for d in deployments):
            time.sleep(1.0)  # the controller publishes to the router in the same tick
            return
        time.sleep(0.2)
    raise service.failure(f"the controller did not take policy {policy} within 30 s")


def cpu_binding(pid: int | None) -> str | None:
    """``VLLM_CPU_OMP_THREADS_BIND`` of a replica process: the CPUs its threads use."""
    if pid is None:
        return None
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for entry in environ:
        key, _, value = entry.partition(b"=")
        if key == b"VLLM_CPU_OMP_THREADS_BIND":
            return value.decode()
    return None


# -- replicas, directly ----------------------------------------------------------------------


async def warm_up(service: Service, urls: Sequence[str]) -> None:
    """One short request to each replica directly (compiled paths hot; nothing the
    workload shares gets cached) and one through the gateway (shorter than a prefix
    block, so no policy records it)."""
    targets = [(f"{url}/v1", "unused") for url in urls] + [(f"{service.url}/v1", service.api_key)]
    for base_url, api_key in targets:
        async with openai.AsyncOpenAI(base_url=base_url, api_key=api_key) as client:
            await client.chat.completions.create(
                model=SERVED_NAME, messages=[{"role": "user", "content": "Warm up, please."}],
                max_tokens=4, temperature=0.0,
            )  # fmt: skip


async def reset_prefix_caches(urls: Sequence[str], timeout_s: float = 60.0) -> bool:
    """Empty every replica's prefix cache; False when a replica does not serve the route.

    vLLM refuses (``success: false``) while requests still hold blocks: retried.
    """
    async with httpx.AsyncClient(timeout=30.0) as client:
        for url in urls:
            deadline = time.monotonic() + timeout_s
            while True:
                response = await client.post(f"{url}/reset_prefix_cache")
                if response.status_code == 404:
                    return False
                response.raise_for_status()
                if response.json().get("success", True):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{url} would not reset its prefix cache")
                await asyncio.sleep(0.5)
    return True


async def read_counters(urls: Sequence[str]) -> list[CacheCounters]:
    async with httpx.AsyncClient(timeout=30.0) as client:
        texts = [(await client.get(f"{url}/metrics")).text for url in urls]
    return [cache_counters(text) for text in texts]
