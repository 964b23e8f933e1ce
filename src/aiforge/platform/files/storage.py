"""Where file bytes live: ``<data_dir>/files/<project_id>/<file_id>``, owner-only.

Directories are created 0700 and files 0600, like every secret in the data dir
(:func:`aiforge.platform.bootstrap.secure_data_dir`). A file is written under a temporary
name beside its final one and renamed into place once complete, so a reader never sees a
half-written file; a crash leaves at most an unreferenced ``.part`` (no row names it).
All methods do blocking I/O: callers run them off the event loop.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import BinaryIO

from aiforge.platform.db.engine import PRIVATE_DIR_MODE, PRIVATE_FILE_MODE

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class FileStore:
    """The bytes of every project's files under one root directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, project_id: str, file_id: str) -> Path:
        """Where file ``file_id`` of ``project_id`` is stored. Ids come from this service
        (``file-…``, ``proj_…``); anything else is refused rather than joined into a path."""
        if not (_SAFE_NAME.match(project_id) and _SAFE_NAME.match(file_id)):
            raise ValueError(f"not a stored file's id: {project_id!r}/{file_id!r}")
        return self.root / project_id / file_id

    def create(self, project_id: str, file_id: str) -> tuple[BinaryIO, Path]:
        """A new temporary file to write ``file_id`` into (0600), and its path; finish with
        :meth:`commit` or :meth:`discard`."""
        final = self.path(project_id, file_id)
        self.root.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
        final.parent.mkdir(mode=PRIVATE_DIR_MODE, exist_ok=True)
        partial = final.with_name(final.name + ".part")
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        descriptor = os.open(partial, flags, PRIVATE_FILE_MODE)
        return os.fdopen(descriptor, "wb"), partial

    def commit(self, partial: Path) -> Path:
        """Move a completely written temporary file into place; its final path."""
        final = partial.with_name(partial.name.removesuffix(".part"))
        os.replace(partial, final)
        return final

    @staticmethod
    def discard(partial: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()

    def write(self, project_id: str, file_id: str, data: bytes) -> Path:
        """Store ``data`` as ``file_id`` at once (a batch's output file)."""
        handle, partial = self.create(project_id, file_id)
        with handle:
            handle.write(data)
        return self.commit(partial)

    def delete(self, project_id: str, file_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(project_id, file_id).unlink()
