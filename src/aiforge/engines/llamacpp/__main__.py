"""``python -m aiforge.engines.llamacpp --model FILE.gguf --port N``: one llama.cpp replica."""

from __future__ import annotations

import os

from aiforge.engines.llamacpp.launcher import THREAD_ENV

if __name__ == "__main__":
    # Before llama.cpp (and its libgomp) load: OpenMP reads its settings once.
    for _key, _value in THREAD_ENV.items():
        os.environ.setdefault(_key, _value)

    from aiforge.engines.llamacpp.loading import build_engine
    from aiforge.engines.server.main import run_replica

    run_replica(None, build_engine)
