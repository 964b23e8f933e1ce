"""The transformers engine: continuous batching on plain PyTorch/transformers, anywhere.

:class:`TransformersTokenEngine` is the token-level engine aiforge's replica server drives;
:class:`TransformersEngine` describes the replica process that runs it
(``python -m aiforge.engines.transformers``).
"""

from aiforge.engines.transformers.engine import TransformersTokenEngine
from aiforge.engines.transformers.launcher import TransformersEngine

__all__ = ["TransformersEngine", "TransformersTokenEngine"]
