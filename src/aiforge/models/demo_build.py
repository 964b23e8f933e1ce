"""What every offline demo model's builder shares: build once, publish atomically, and the
demo tokenizer with its special-token ids.

The chat demo (:mod:`aiforge.models.demo`) builds the same way; the embedding and reranker
demos use these helpers so that several processes asking for a demo at once (a gateway and
its replicas, parallel tests) never see a half-built directory.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["build_once", "special_token_ids"]


def build_once(final: Path, build: Callable[[Path], object]) -> Path:
    """Return ``final``, first running ``build(staging)`` and renaming the staging
    directory to ``final`` if ``final`` holds no ``config.json`` yet.

    Safe to call from several processes at once: each builds in a private temporary
    directory and publishes it with an atomic rename; a loser discards its copy.
    """
    if (final / "config.json").is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}-build-", dir=final.parent))
    try:
        build(staging)
        try:
            os.rename(staging, final)
        except OSError:
            if not (final / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def special_token_ids(tokenizer_dir: Path) -> dict[str, int]:
    """The ids of the added (special) tokens of the tokenizer saved in ``tokenizer_dir``."""
    tokenizer = json.loads((tokenizer_dir / "tokenizer.json").read_text())
    return {token["content"]: int(token["id"]) for token in tokenizer["added_tokens"]}
