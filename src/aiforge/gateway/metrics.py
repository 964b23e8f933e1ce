"""The gateway's Prometheus metrics: counted in plain integers on the request path, turned
into Prometheus families only when ``/metrics`` is scraped.

``prometheus_client``'s own metric objects take a lock and make a value object per update;
the request path updates seven of them per request, which cost more than its whole
admission check. The event loop is the only writer (and ``render`` runs on it too), so the
counts here are plain attributes, and :class:`_Collector` reads them at scrape time. Names,
labels, buckets and the exposition format are those of the equivalent
``Counter``/``Histogram``/``Gauge``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST as PROMETHEUS_CONTENT_TYPE
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

__all__ = ["PROMETHEUS_CONTENT_TYPE", "GatewayMetrics"]

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                   120.0, 300.0)  # fmt: skip
"""Upper bounds (seconds) of the TTFT and latency histograms' buckets; ``+Inf`` follows."""


class _Histogram:
    """Observations per bucket (not cumulative: a value counts in the first bucket whose
    bound is at least the value, or in the last, ``+Inf``), and their sum."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(LATENCY_BUCKETS, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        buckets, running = [], 0
        for bound, count in zip((*map(str, LATENCY_BUCKETS), "+Inf"), self.counts, strict=True):
            running += count
            buckets.append((bound, float(running)))
        return buckets


class _ModelSeries:
    """One model's counts."""

    __slots__ = ("completion_tokens", "in_flight", "latency", "prompt_tokens", "ttft")

    def __init__(self) -> None:
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.in_flight = 0
        self.ttft = _Histogram()
        self.latency = _Histogram()


class GatewayMetrics:
    """Requests by model, kind and status, tokens, TTFT and latency per model, requests in
    flight per model."""

    def __init__(self) -> None:
        self._models: dict[str, _ModelSeries] = {}
        self._answered: dict[tuple[str, str, int], int] = {}
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_Collector(self))

    def started(self, model: str) -> None:
        """A request of ``model`` is being proxied."""
        self._series(model).in_flight += 1

    def ended(self, model: str) -> None:
        """A request counted by :meth:`started` is done."""
        self._series(model).in_flight -= 1

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
        key = (model, kind, status)
        self._answered[key] = self._answered.get(key, 0) + 1
        series = self._series(model)
        series.prompt_tokens += prompt_tokens
        series.completion_tokens += completion_tokens
        if ttft_s is not None:
            series.ttft.observe(ttft_s)
        series.latency.observe(latency_s)

    def _series(self, model: str) -> _ModelSeries:
        series = self._models.get(model)
        if series is None:
            series = self._models[model] = _ModelSeries()
        return series

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Collector(Collector):
    """The counts of one :class:`GatewayMetrics`, as Prometheus families."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self._metrics
        answered = CounterMetricFamily(
            "aiforge_gateway_requests",
            "Requests answered, by model, kind and HTTP status.",
            labels=["model", "kind", "status"],
        )
        for (model, kind, status), count in m._answered.items():
            answered.add_metric([model, kind, str(status)], count)
        yield answered
        models = m._models.items()
        for name, doc, attribute in (
            ("prompt_tokens", "Prompt tokens processed, by model.", "prompt_tokens"),
            ("completion_tokens", "Completion tokens generated, by model.", "completion_tokens"),
        ):
            family = CounterMetricFamily(f"aiforge_gateway_{name}", doc, labels=["model"])
            for model, series in models:
                family.add_metric([model], getattr(series, attribute))
            yield family
        for name, doc, attribute in (
            ("time_to_first_token_seconds",
             "Time from request to the first generated text (streams), by model.", "ttft"),
            ("request_latency_seconds",
             "Time from request to the last byte of the response, by model.", "latency"),
        ):  # fmt: skip
            histogram = HistogramMetricFamily(f"aiforge_gateway_{name}", doc, labels=["model"])
            for model, series in models:
                observed: _Histogram = getattr(series, attribute)
                histogram.add_metric([model], observed.cumulative(), observed.total)
            yield histogram
        in_flight = GaugeMetricFamily(
            "aiforge_gateway_requests_in_flight",
            "Requests being proxied now, by model.",
            labels=["model"],
        )
        for model, series in models:
            in_flight.add_metric([model], series.in_flight)
        yield in_flight
