"""The llama.cpp engine: GGUF models with continuous batching over llama.cpp's C API.

:mod:`.launcher` describes the replica process (importable without llama-cpp-python);
:mod:`.engine` is the :class:`~aiforge.engines.core.TokenEngine` that runs inside it.
"""

from aiforge.engines.llamacpp.launcher import LlamaCppEngine

__all__ = ["LlamaCppEngine"]
