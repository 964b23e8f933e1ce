"""The benchmark scripts' pure modules (``benchmarks/routing_*.py``) import as top-level
modules, as they do when a script in ``benchmarks/`` runs."""

import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[3] / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))
