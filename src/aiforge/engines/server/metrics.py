"""Replica-level Prometheus metrics, in a registry of the app's own (not the global one)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from aiforge.engines.prefix_cache import PrefixCacheStats

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class _EngineLoad(Collector):
    """Reads running/waiting from the engine at scrape time."""

    def __init__(self, model: str, load: Callable[[], dict[str, int]]) -> None:
        self._model = model
        self._load = load

    def collect(self) -> Iterator[GaugeMetricFamily]:
        load = self._load()
        for state in ("running", "waiting"):
            family = GaugeMetricFamily(
                f"aiforge_replica_requests_{state}",
                f"Sequences {state} in the engine.",
                labels=["model"],
            )
            family.add_metric([self._model], float(load.get(state, 0)))
            yield family


class _PrefixCache(Collector):
    """Reads the engine's prefix-cache counters at scrape time (nothing while it has none)."""

    def __init__(self, model: str, stats: Callable[[], PrefixCacheStats | None]) -> None:
        self._model = model
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        if stats is None:
            return
        name = "aiforge_replica_prefix_cache"
        counters = (
            ("queried_tokens", "Prompt tokens looked up in the cache.", stats.queried_tokens),
            ("hit_tokens", "Prompt tokens served from the prefix cache.", stats.hit_tokens),
            ("queries", "Prompts looked up in the prefix cache.", stats.queries),
            ("hits", "Prompts that reused cached KV.", stats.hits),
            ("evictions", "Resident sequences evicted from the prefix cache.", stats.evictions),
        )
        for suffix, doc, value in counters:
            counter = CounterMetricFamily(f"{name}_{suffix}", doc, labels=["model"])
            counter.add_metric([self._model], float(value))
            yield counter
        gauges = (
            ("hit_rate", "Prefix cache hit rate: hit tokens / queried tokens.", stats.hit_rate),
            ("entries", "Finished sequences whose KV is resident now.", float(stats.entries)),
        )
        for suffix, doc, level in gauges:
            gauge = GaugeMetricFamily(f"{name}_{suffix}", doc, labels=["model"])
            gauge.add_metric([self._model], level)
            yield gauge


class ReplicaMetrics:
    """Counters and histograms for one served model."""

    def __init__(self, model: str, load: Callable[[], dict[str, int]]) -> None:
        self.model = model
        self.registry = CollectorRegistry()
        self.registry.register(_EngineLoad(model, load))
        labels = ["model", "endpoint", "status"]
        self.requests = Counter(
            "aiforge_replica_requests", "Requests served.", labels, registry=self.registry
        )
        self.prompt_tokens = Counter(
            "aiforge_replica_prompt_tokens",
            "Prompt tokens processed.",
            ["model"],
            registry=self.registry,
        )
        self.generation_tokens = Counter(
            "aiforge_replica_generation_tokens",
            "Tokens generated.",
            ["model"],
            registry=self.registry,
        )
        self.ttft = Histogram(
            "aiforge_replica_time_to_first_token_seconds",
            "Time to first token.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.latency = Histogram(
            "aiforge_replica_request_latency_seconds",
            "End-to-end request latency.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )

    def watch_prefix_cache(self, stats: Callable[[], PrefixCacheStats | None]) -> None:
        """Publish the engine's prefix-cache counters (``aiforge_replica_prefix_cache_*``,
        ``..._hit_rate``), read at each scrape. Called once, by the replica's context."""
        self.registry.register(_PrefixCache(self.model, stats))

    def observe_request(
        self,
        endpoint: str,
        status: int,
        *,
        prompt_tokens: int = 0,
        generation_tokens: int = 0,
        ttft_s: float | None = None,
        latency_s: float | None = None,
    ) -> None:
        self.requests.labels(self.model, endpoint, str(status)).inc()
        self.prompt_tokens.labels(self.model).inc(prompt_tokens)
        self.generation_tokens.labels(self.model).inc(generation_tokens)
        if ttft_s is not None:
            self.ttft.labels(self.model).observe(ttft_s)
        if latency_s is not None:
            self.latency.labels(self.model).observe(latency_s)

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))
