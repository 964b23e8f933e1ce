"""Where the GGUF file of a model path is (no llama.cpp import: the launcher uses it)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["find_gguf"]


def find_gguf(model_path: Path) -> Path | None:
    """``model_path`` itself when it is a ``.gguf`` file, the one ``.gguf`` inside it when
    it is a directory holding exactly one, else None."""
    if model_path.is_file():
        return model_path if model_path.suffix.lower() == ".gguf" else None
    if model_path.is_dir():
        found = sorted(p for p in model_path.glob("*.gguf") if p.is_file())
        return found[0] if len(found) == 1 else None
    return None
