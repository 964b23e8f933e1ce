"""``aiforge bench``: load generation and measurement for any OpenAI-compatible endpoint.

Pure parts: :mod:`~aiforge.bench.workload` (what to send), :mod:`~aiforge.bench.source`
(which request next), :mod:`~aiforge.bench.schedule` (when), :mod:`~aiforge.bench.stats`
(the numbers). I/O around them: :mod:`~aiforge.bench.client` (one timed request),
:mod:`~aiforge.bench.runner` (the load loops), :mod:`~aiforge.bench.report` (progress,
table, JSON), :mod:`~aiforge.bench.plot` (PNG) and :mod:`~aiforge.bench.fake_server` (a
server of known pace, for tests). The command is ``aiforge.cli.bench``.
"""

from aiforge.bench.client import BenchClient, Endpoint
from aiforge.bench.runner import RunResult, run_bench, run_level
from aiforge.bench.schedule import Load, parse_loads
from aiforge.bench.stats import SLO, LoadSummary, RequestSample, percentile, summarize

__all__ = [
    "SLO",
    "BenchClient",
    "Endpoint",
    "Load",
    "LoadSummary",
    "RequestSample",
    "RunResult",
    "parse_loads",
    "percentile",
    "run_bench",
    "run_level",
    "summarize",
]
