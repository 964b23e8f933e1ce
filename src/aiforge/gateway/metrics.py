"""The gateway's Prometheus metrics, in a registry of its own (one per app)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST as PROMETHEUS_CONTENT_TYPE
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["PROMETHEUS_CONTENT_TYPE", "GatewayMetrics"]

_LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
)


@dataclass(frozen=True, slots=True)
class _ModelSeries:
    """One model's labelled children."""

    prompt_tokens: Counter
    completion_tokens: Counter
    ttft: Histogram
    latency: Histogram
    in_flight: Gauge


class GatewayMetrics:
    """Requests by model and status, tokens, TTFT and latency per model, requests in flight."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "aiforge_gateway_requests",
            "Requests answered, by model, kind and HTTP status.",
            ["model", "kind", "status"],
            registry=self.registry,
        )
        self.prompt_tokens = Counter(
            "aiforge_gateway_prompt_tokens",
            "Prompt tokens processed, by model.",
            ["model"],
            registry=self.registry,
        )
        self.completion_tokens = Counter(
            "aiforge_gateway_completion_tokens",
            "Completion tokens generated, by model.",
            ["model"],
            registry=self.registry,
        )
        self.ttft = Histogram(
            "aiforge_gateway_time_to_first_token_seconds",
            "Time from request to the first generated text (streams), by model.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.latency = Histogram(
            "aiforge_gateway_request_latency_seconds",
            "Time from request to the last byte of the response, by model.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "aiforge_gateway_requests_in_flight",
            "Requests being proxied now, by model.",
            ["model"],
            registry=self.registry,
        )

        self._models: dict[str, _ModelSeries] = {}
        self._answered: dict[tuple[str, str, int], Any] = {}

    def in_flight_of(self, model: str) -> Gauge:
        """The requests-in-flight gauge of ``model`` (its labelled child, looked up once)."""
        return self._series(model).in_flight

    def observe(
        self,
        *,
        model: str,
        kind: str,
        status: int,
        prompt_tokens: int,
        completion_tokens: int,
        ttft_s: float | None,
        latency_s: float,
    ) -> None:
        """Record one finished request."""
        answered = self._answered.get((model, kind, status))
        if answered is None:
            answered = self._answered[(model, kind, status)] = self.requests.labels(
                model, kind, str(status)
            )
        answered.inc()
        series = self._series(model)
        if prompt_tokens:
            series.prompt_tokens.inc(prompt_tokens)
        if completion_tokens:
            series.completion_tokens.inc(completion_tokens)
        if ttft_s is not None:
            series.ttft.observe(ttft_s)
        series.latency.observe(latency_s)

    def _series(self, model: str) -> _ModelSeries:
        # ``labels()`` takes a lock and builds a key on every call; the request path asks
        # for the same few children every time, so they are kept here.
        series = self._models.get(model)
        if series is None:
            series = self._models[model] = _ModelSeries(
                prompt_tokens=self.prompt_tokens.labels(model),
                completion_tokens=self.completion_tokens.labels(model),
                ttft=self.ttft.labels(model),
                latency=self.latency.labels(model),
                in_flight=self.in_flight.labels(model),
            )
        return series

    def render(self) -> bytes:
        return generate_latest(self.registry)
