"""Added latency of auth + limits + metering per request, against the bare path, same run.

For every simulated request this times what the gateway's platform seams do on the
request path, exactly as the gateway calls them:

* **bare**: ``OpenAccess.authenticate`` + ``admit`` + ``settle`` + ``DiscardUsage.record``
  (what ``aiforge serve`` does with no platform);
* **platform**: the real ``PlatformAuthenticator`` (HMAC key check against its in-memory
  cache, built by ``build_platform`` on a fresh SQLite data dir), ``LimitAdmission`` with
  every limit set on the key and its project (so every dimension is checked and reserved),
  and the real ``UsageLedger`` (journal append; its flusher thread writes to SQLite in the
  background while the benchmark runs, as in production);
* **platform+redis** (with ``--redis-url`` or ``AIFORGE_TEST_REDIS_URL``): the same with
  the counters in Redis (one Lua call to admit, one to settle).

The two paths run interleaved (bare, platform, bare, …) so machine noise hits both alike.
Added latency = platform − bare, per percentile. Run:

    .venv/bin/python benchmarks/gateway_overhead.py --requests 20000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiforge.config import Settings
from aiforge.gateway.access import Admission, Authenticator, DiscardUsage, OpenAccess, UsageSink
from aiforge.platform.bootstrap import build_platform
from aiforge.platform.limits import LimitAdmission, LimitPolicy, MemoryStore, RedisStore, Store
from aiforge.platform.metering import UsageLedger
from aiforge.types import Principal, UsageEvent

POLICY = LimitPolicy(
    requests_per_minute=10_000_000,
    tokens_per_minute=10_000_000_000,
    max_concurrent=10_000,
    tokens_per_day=10_000_000_000,
    tokens_per_month=10_000_000_000,
)

Step = Callable[[int], Awaitable[None]]


def request_path(auth: Authenticator, admission: Admission, sink: UsageSink, header: str) -> Step:
    """One request's platform work, in the gateway's order."""

    async def step(i: int) -> None:
        principal: Principal = auth.authenticate(header)
        ticket = await admission.admit(principal, "qwen3", 64)
        await admission.settle(ticket, 48)
        sink.record(
            UsageEvent(
                request_id=f"bench-{uuid.uuid4().hex}",
                key_id=principal.key_id,
                project_id=principal.project_id,
                organization_id=principal.organization_id,
                model="qwen3",
                kind="chat",
                status_code=200,
                prompt_tokens=16,
                completion_tokens=32,
                latency_ms=10.0,
                started_at=time.time(),
            )
        )

    return step


def percentiles(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered), p99, statistics.fmean(ordered)


async def measure(paths: dict[str, Step], requests: int, warmup: int) -> dict[str, list[float]]:
    for step in paths.values():
        for i in range(warmup):
            await step(i)
    samples: dict[str, list[float]] = {name: [] for name in paths}
    for i in range(requests):
        for name, step in paths.items():
            start = time.perf_counter_ns()
            await step(i)
            samples[name].append((time.perf_counter_ns() - start) / 1e6)
    return samples


async def run(requests: int, warmup: int, redis_url: str | None) -> None:
    with tempfile.TemporaryDirectory(prefix="aiforge-bench-") as data_dir:
        settings = Settings(data_dir=Path(data_dir), admin_key=f"sk-bench-{uuid.uuid4().hex}")
        platform = build_platform(settings)
        await platform.start()
        assert settings.admin_key is not None
        header = f"Bearer {settings.admin_key}"
        ledger = platform.usage_sink
        if not isinstance(ledger, UsageLedger):  # bootstrap still without the ledger
            ledger = UsageLedger.from_settings(settings, platform.engine)
            await ledger.start()

        def admission(store: Store) -> LimitAdmission:
            return LimitAdmission(store, lambda _p: (POLICY, POLICY))

        bare = OpenAccess()
        paths: dict[str, Step] = {
            "bare": request_path(bare, bare, DiscardUsage(), header),
            "platform": request_path(
                platform.authenticator, admission(MemoryStore()), ledger, header
            ),
        }
        redis_admission = admission(RedisStore.from_url(redis_url)) if redis_url else None
        if redis_admission is not None:
            paths["platform+redis"] = request_path(
                platform.authenticator, redis_admission, ledger, header
            )
        samples = await measure(paths, requests, warmup)
        if redis_admission is not None:
            await redis_admission.aclose()
        if ledger is not platform.usage_sink:
            await ledger.stop()
        await platform.stop()
    report(samples, requests)


def report(samples: dict[str, list[float]], requests: int) -> None:
    bare_p50, bare_p99, _ = percentiles(samples["bare"])
    print(f"\n{requests} requests per path, interleaved; milliseconds per request\n")
    print("| path | p50 | p99 | mean | added p50 | added p99 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, values in samples.items():
        p50, p99, mean = percentiles(values)
        added = "" if name == "bare" else f"{p50 - bare_p50:.3f} | {p99 - bare_p99:.3f}"
        if name == "bare":
            added = "- | -"
        print(f"| {name} | {p50:.3f} | {p99:.3f} | {mean:.3f} | {added} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument(
        "--redis-url", default=os.environ.get("AIFORGE_TEST_REDIS_URL"), help="Also measure Redis."
    )
    args = parser.parse_args()
    asyncio.run(run(args.requests, args.warmup, args.redis_url))


if __name__ == "__main__":
    main()
