"""The PNG of a run: latency and throughput against the offered load (matplotlib, Agg).

Left: TTFT, ITL and E2E at p50 (solid) and p99 (dashed), in milliseconds on a log scale.
Right: output tokens/s, and requests/s and goodput on a second axis. The x axis is the
load levels of the run (concurrency or request rate); a run of one level shows points.

matplotlib is an optional dependency (``pip install 'aiforge[bench]'``):
:func:`matplotlib_missing` says so before a run starts rather than after it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

from aiforge.bench.schedule import Load
from aiforge.bench.stats import Distribution, LoadSummary

__all__ = ["INSTALL_HINT", "matplotlib_missing", "write_plot"]

INSTALL_HINT = "--plot needs matplotlib: pip install 'aiforge[bench]' (or: pip install matplotlib)"


def matplotlib_missing() -> bool:
    return importlib.util.find_spec("matplotlib") is None


def _series(summaries: Sequence[LoadSummary], metric: str, q: str) -> list[float]:
    values = []
    for summary in summaries:
        distribution: Distribution | None = getattr(summary, metric)
        values.append(float("nan") if distribution is None else getattr(distribution, q) * 1000)
    return values


def write_plot(levels: Sequence[tuple[Load, LoadSummary]], path: Path, *, title: str = "") -> None:
    """Write the PNG of ``levels`` to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot, ticker

    loads = [load for load, _ in levels]
    summaries = [summary for _, summary in levels]
    x = [load.value for load in loads]
    x_label = "concurrency" if loads and loads[0].kind == "concurrency" else "request rate (req/s)"
    style = "o-" if len(x) > 1 else "o"
    figure, (latency, throughput) = pyplot.subplots(1, 2, figsize=(12, 4.8))
    try:
        for metric, colour in (("ttft", "tab:blue"), ("itl", "tab:green"), ("e2e", "tab:red")):
            for q, dash in (("p50", "-"), ("p99", "--")):
                latency.plot(
                    x, _series(summaries, metric, q), style.replace("-", dash),
                    color=colour, label=f"{metric.upper()} {q}",
                )  # fmt: skip
        latency.set(xlabel=x_label, ylabel="latency (ms)", title="latency")
        latency.set_yscale("log")
        latency.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        latency.grid(True, which="both", alpha=0.3)
        latency.legend(fontsize="small")

        throughput.plot(x, [s.output_tokens_per_s for s in summaries], style,
                        color="tab:purple", label="output tok/s")  # fmt: skip
        throughput.set(xlabel=x_label, ylabel="output tokens/s", title="throughput")
        throughput.grid(True, alpha=0.3)
        rates = throughput.twinx()
        rates.plot(x, [s.requests_per_s for s in summaries], style.replace("-", ":"),
                   color="tab:orange", label="req/s")  # fmt: skip
        if any(s.goodput_per_s is not None for s in summaries):
            goodput = [s.goodput_per_s or 0.0 for s in summaries]
            rates.plot(x, goodput, style.replace("-", "-."), color="tab:olive", label="goodput")
        rates.set_ylabel("requests/s")
        for axes in (latency, throughput):
            axes.set_xticks(x, [f"{value:g}" for value in x])
        handles = throughput.get_legend_handles_labels()
        more = rates.get_legend_handles_labels()
        throughput.legend(handles[0] + more[0], handles[1] + more[1], fontsize="small")
        if title:
            figure.suptitle(title)
        figure.tight_layout()
        figure.savefig(path, dpi=100)
    finally:
        pyplot.close(figure)
