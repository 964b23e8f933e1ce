"""The pure half of ``benchmarks/vllm_vs_direct.py``: its measurements, the report and
the comparison of the two launches. No I/O: the script reads ``/proc`` and runs the servers.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

SIDES = ("direct", "aiforge")
TARGET = 0.97
"""aiforge's output tokens/s over direct's that the issue asks for, at every level."""
IGNORED_OPTIONS = frozenset({"--port", "--host"})
"""Options that always differ between the two servers and change nothing about speed."""


# -- measurements and the report (pure) -------------------------------------------------------


@dataclass(frozen=True)
class Measure:
    """One side at one level in one repetition."""

    side: str
    rep: int
    concurrency: int
    requests: int
    errors: int
    output_tokens: int
    output_tok_s: float
    ttft_p50_s: float | None
    itl_p50_s: float | None
    tpot_p50_s: float | None
    server_cpu_s: float
    """CPU seconds of the server's process tree (aiforge: gateway and replica) during the level."""
    gateway_cpu_s: float | None = None
    """aiforge only: the part spent outside the replica's process tree."""
    load_average: float | None = None
    """The machine's 1-minute load average as the level started."""

    @property
    def cpu_ms_per_token(self) -> float | None:
        return _per_token_ms(self.server_cpu_s, self.output_tokens)

    @property
    def gateway_cpu_ms_per_token(self) -> float | None:
        return _per_token_ms(self.gateway_cpu_s, self.output_tokens)


def _per_token_ms(cpu_s: float | None, tokens: int) -> float | None:
    return None if cpu_s is None or not tokens else 1000.0 * cpu_s / tokens


def measure_from(
    document: dict[str, Any], side: str, rep: int, server_cpu_s: float,
    gateway_cpu_s: float | None = None,
) -> Measure:  # fmt: skip
    """The :class:`Measure` of an ``aiforge bench`` result document with one level."""
    (level,) = document["levels"]
    summary = level["summary"]

    def p50(name: str) -> float | None:
        distribution = summary.get(name)
        return None if distribution is None else float(distribution["p50"])

    return Measure(
        side=side, rep=rep, concurrency=int(level["load"]["value"]),
        requests=int(summary["requests"]), errors=int(summary["errors"]),
        output_tokens=int(summary["output_tokens"]),
        output_tok_s=float(summary["output_tokens_per_s"]), ttft_p50_s=p50("ttft"),
        itl_p50_s=p50("itl"), tpot_p50_s=p50("tpot"), server_cpu_s=server_cpu_s,
        gateway_cpu_s=gateway_cpu_s,
        load_average=document["machine"]["load_average_start"][0],
    )  # fmt: skip


def side_order(rep: int) -> tuple[str, str]:
    """direct first on even repetitions, aiforge first on odd ones (ABBA)."""
    return SIDES if rep % 2 == 0 else (SIDES[1], SIDES[0])


def _median(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


@dataclass(frozen=True)
class LevelRow:
    """Both sides at one level, medians over the repetitions."""

    concurrency: int
    direct: dict[str, float | None]
    aiforge: dict[str, float | None]
    tok_s_ratio: float | None
    tok_s_ratio_range: tuple[float, float] | None
    """The lowest and highest per-repetition ratio (repetition i's aiforge over its direct)."""
    errors: int

    @property
    def meets_target(self) -> bool:
        return self.tok_s_ratio is not None and self.tok_s_ratio >= TARGET


def _side_medians(runs: Sequence[Measure]) -> dict[str, float | None]:
    return {
        "output_tok_s": _median([m.output_tok_s for m in runs]),
        "ttft_p50_s": _median([m.ttft_p50_s for m in runs]),
        "itl_p50_s": _median([m.itl_p50_s for m in runs]),
        "tpot_p50_s": _median([m.tpot_p50_s for m in runs]),
        "cpu_ms_per_token": _median([m.cpu_ms_per_token for m in runs]),
        "gateway_cpu_ms_per_token": _median([m.gateway_cpu_ms_per_token for m in runs]),
    }


def level_rows(measures: Sequence[Measure]) -> list[LevelRow]:
    """One row per concurrency level, in the order the levels were first measured."""
    levels = list(dict.fromkeys(m.concurrency for m in measures))
    rows = []
    for level in levels:
        at = [m for m in measures if m.concurrency == level]
        by_side = {side: [m for m in at if m.side == side] for side in SIDES}
        direct, aiforge = (_side_medians(by_side[side]) for side in SIDES)
        pairs = {m.rep: m for m in by_side["direct"]}
        per_rep = [
            m.output_tok_s / pairs[m.rep].output_tok_s
            for m in by_side["aiforge"]
            if m.rep in pairs and pairs[m.rep].output_tok_s > 0
        ]
        rows.append(LevelRow(
            concurrency=level, direct=direct, aiforge=aiforge,
            tok_s_ratio=_ratio(aiforge["output_tok_s"], direct["output_tok_s"]),
            tok_s_ratio_range=(min(per_rep), max(per_rep)) if per_rep else None,
            errors=sum(m.errors for m in at),
        ))  # fmt: skip
    return rows


def fmt(value: float | None, scale: float = 1.0, digits: int = 1) -> str:
    return "–" if value is None else f"{value * scale:.{digits}f}"


def render_report(rows: Sequence[LevelRow], heading: str) -> str:
    """The Markdown table (aiforge / direct: higher is better for tok/s, lower for times)
    and the verdict on the target. TPOT (per request, ``(e2e - TTFT) / (tokens - 1)``) sits
    beside ITL because ITL counts chunk gaps: a busy relay that hands on two chunks in one
    read shows one gap near zero, and TPOT is immune to that."""
    lines = [
        heading,
        "",
        "| streams | direct tok/s | aiforge tok/s | **aiforge / direct** (range) "
        "| TTFT p50 ms direct / aiforge (ratio) | ITL p50 ms direct / aiforge (ratio) "
        "| TPOT p50 ms direct / aiforge (ratio) "
        "| server CPU-ms/token direct / aiforge (gateway) | errors |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        d, a = row.direct, row.aiforge
        spread = "" if row.tok_s_ratio_range is None else (
            f" ({row.tok_s_ratio_range[0]:.2f}–{row.tok_s_ratio_range[1]:.2f})"
        )  # fmt: skip
        times = " | ".join(
            f"{fmt(d[name], 1000)} / {fmt(a[name], 1000)} "
            f"({fmt(_ratio(a[name], d[name]), digits=2)})"
            for name in ("ttft_p50_s", "itl_p50_s", "tpot_p50_s")
        )
        lines.append(
            f"| {row.concurrency} | {fmt(d['output_tok_s'])} | {fmt(a['output_tok_s'])} "
            f"| **{fmt(row.tok_s_ratio, digits=3)}**{spread} | {times} "
            f"| {fmt(d['cpu_ms_per_token'])} / {fmt(a['cpu_ms_per_token'])} "
            f"({fmt(a['gateway_cpu_ms_per_token'])}) | {row.errors} |"
        )
    met = [row for row in rows if row.meets_target]
    verdict = "met" if rows and len(met) == len(rows) else "NOT met"
    levels = ", ".join(str(row.concurrency) for row in rows)
    lines += ["", f"target aiforge / direct output tok/s >= {TARGET} at {levels} streams: "
              f"{verdict}"]  # fmt: skip
    return "\n".join(lines)


# -- how the two launches differ (pure) -------------------------------------------------------


@dataclass(frozen=True)
class LaunchSeen:
    """A running server as ``/proc`` shows it."""

    argv: tuple[str, ...]
    env: dict[str, str]
    """The variables of :data:`LAUNCH_ENV_PREFIXES` it started with."""
    threads: dict[str, dict[str, int]]
    """Per process name of its tree: how many threads may run on each CPU list."""


def cli_options(argv: Sequence[str]) -> dict[str, str]:
    """``--name value``, ``--name=value`` and bare ``--flag`` (value ``""``) of ``argv``."""
    options: dict[str, str] = {}
    for i, token in enumerate(argv):
        if not token.startswith("--"):
            continue
        name, equals, value = token.partition("=")
        if not equals and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            value = argv[i + 1]
        options[name] = value
    return options


def _entry_point(argv: Sequence[str]) -> str:
    return argv[argv.index("-m") + 1] if "-m" in argv[:-1] else (argv[0] if argv else "")


def cpu_list_text(cpus: Sequence[int]) -> str:
    """CPU ids in the kernel's and vLLM's list syntax, as vLLM's docs write them: ``0-3,6``."""
    ordered = sorted(set(cpus))
    if not ordered:
        raise ValueError("no CPUs")
    runs: list[list[int]] = []
    for cpu in ordered:
        if runs and cpu == runs[-1][-1] + 1:
            runs[-1].append(cpu)
        else:
            runs.append([cpu])
    return ",".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)


def parse_cpu_list(text: str) -> frozenset[int]:
    """``0-3,6`` (or ``0,1,2,3,6``) as a set of CPU ids; ``ValueError`` when malformed."""
    cpus: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        low, dash, high = part.partition("-")
        cpus.update(range(int(low), int(high if dash else low) + 1))
    return frozenset(cpus)


def _same_env_value(name: str, a: str | None, b: str | None) -> bool:
    """Equal, or (for the OpenMP binding) the same CPUs written differently."""
    if a is None or b is None or name != "VLLM_CPU_OMP_THREADS_BIND" or a == b:
        return a == b
    try:
        return all(parse_cpu_list(x) == parse_cpu_list(y) for x, y in
                   zip(a.split("|"), b.split("|"), strict=True))  # fmt: skip
    except ValueError:  # "auto", "nobind", or lists per rank that do not pair up
        return False


def _option_differences(direct: Sequence[str], aiforge: Sequence[str]) -> list[str]:
    ours, theirs = cli_options(direct), cli_options(aiforge)
    lines = []
    for name in sorted((ours.keys() | theirs.keys()) - IGNORED_OPTIONS):
        a, b = ours.get(name), theirs.get(name)
        if a != b:
            shown = ["(absent)" if v is None else v or "(set)" for v in (a, b)]
            lines.append(f"option {name}: direct {shown[0]} / aiforge {shown[1]}")
    return lines


def launch_differences(direct: LaunchSeen, aiforge: LaunchSeen) -> list[str]:
    """Every difference between the two launches that could change speed, one line each:
    entry point, options (the listening address and port left out), the vLLM/OpenMP
    environment, and the CPUs each process's threads may run on."""
    lines = []
    if _entry_point(direct.argv) != _entry_point(aiforge.argv):
        lines.append(f"entry point: {_entry_point(direct.argv)} / {_entry_point(aiforge.argv)}")
    lines += _option_differences(direct.argv, aiforge.argv)
    for name in sorted(direct.env.keys() | aiforge.env.keys()):
        a, b = direct.env.get(name), aiforge.env.get(name)
        if not _same_env_value(name, a, b):
            shown = ["(unset)" if v is None else v for v in (a, b)]
            lines.append(f"env {name}: direct {shown[0]} / aiforge {shown[1]}")
    if _cpu_lists(direct) != _cpu_lists(aiforge):
        lines.append(f"thread CPUs: direct {affinity_text(direct.threads)} / "
                     f"aiforge {affinity_text(aiforge.threads)}")  # fmt: skip
    return lines


def _cpu_lists(seen: LaunchSeen) -> dict[str, set[str]]:
    """Per process name, the CPU lists its threads may run on (thread counts left out:
    they vary with what each server happened to do)."""
    return {name: set(lists) for name, lists in seen.threads.items()}


def affinity_text(threads: dict[str, dict[str, int]]) -> str:
    """``api_server: 0-1 x12; VLLM::EngineCor: 0 x1, 1 x1, 0-1 x20``."""
    return "; ".join(
        f"{name}: " + ", ".join(f"{cpus} x{n}" for cpus, n in sorted(lists.items()))
        for name, lists in sorted(threads.items())
    )
