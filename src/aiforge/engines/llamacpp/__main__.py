"""``python -m aiforge.engines.llamacpp --model FILE.gguf --port N``: one llama.cpp replica."""

from __future__ import annotations

from aiforge.engines.llamacpp.loading import build_engine
from aiforge.engines.server.main import run_replica

if __name__ == "__main__":
    run_replica(None, build_engine)
