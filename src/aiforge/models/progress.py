"""Download progress: a tiny seam, a rich bar behind it, and a bridge from Hub's tqdm bars.

``huggingface_hub`` reports progress through tqdm classes; aiforge reports it through
:class:`DownloadProgress` so the CLI can draw a rich bar and tests can record what was
reported without a terminal.
"""

from __future__ import annotations

import io
from typing import Any, Protocol


class DownloadProgress(Protocol):
    """Receives byte counts while a model downloads; called from download threads."""

    def start(self, description: str) -> None: ...

    def update(self, *, completed: int, total: int | None) -> None: ...

    def finish(self) -> None: ...


class RichDownloadBar:
    """A rich progress bar on stderr: bytes, speed and time left."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
            TransferSpeedColumn(), TimeRemainingColumn(), console=Console(stderr=True),
            transient=False,
        )  # fmt: skip
        self._task: Any = None

    def start(self, description: str) -> None:
        self._progress.start()
        self._task = self._progress.add_task(description, total=None)

    def update(self, *, completed: int, total: int | None) -> None:
        if self._task is not None:
            self._progress.update(self._task, completed=completed, total=total or None)

    def finish(self) -> None:
        self._progress.stop()


def hub_tqdm_class(progress: DownloadProgress) -> type[Any]:
    """A tqdm class for ``snapshot_download(tqdm_class=...)`` that forwards the bytes bar
    (the one that counts bytes written to disk) to ``progress`` and draws nothing."""
    from tqdm.auto import tqdm  # type: ignore[import-untyped,unused-ignore]

    class _HubBridge(tqdm):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.pop("name", None)
            kwargs["file"] = io.StringIO()  # tqdm keeps counting; the text goes nowhere
            kwargs["disable"] = False
            super().__init__(*args, **kwargs)
            desc = str(kwargs.get("desc") or "")
            self._is_bytes = kwargs.get("unit") == "B" and not desc.startswith("Downloading")

        def update(self, n: float | None = 1) -> bool | None:
            shown: bool | None = super().update(n)
            self._report()
            return shown

        def refresh(self, *args: Any, **kwargs: Any) -> None:
            super().refresh(*args, **kwargs)
            self._report()

        def _report(self) -> None:
            if getattr(self, "_is_bytes", False):
                total = int(self.total) if self.total else None
                progress.update(completed=int(self.n), total=total)

    return _HubBridge
