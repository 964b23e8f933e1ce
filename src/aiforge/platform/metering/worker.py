"""The gateway's handle on its flush worker, a long-lived child process
(:mod:`aiforge.platform.metering.flusher`) that writes sealed journal segments to the
database.

Why a process: reading a segment back, parsing, sorting, converting and inserting its
records costs ~21 µs of Python per request, and on a thread of the gateway that time is
taken from the event loop through the GIL (the gateway served ~12% more requests/s with no
flusher at all). With the worker, the gateway's flusher thread only seals, writes segment
paths to a pipe and blocks reading the answer (GIL released), then deletes the segments.

Protocol, one JSON line each way: the gateway first sends ``{"database_url": url}`` (on
the pipe, never on the command line, where any local user can read a password) and the
worker answers ``{"ready": true}`` or ``{"error": ...}``. Then each
``{"segments": [[path, adopted], ...]}`` is answered ``{"inserted": n}`` or
``{"error": "..."}``. The worker never deletes or locks a segment: the gateway keeps each
one locked (so no other gateway adopts it) until the worker answered that its batch
committed.

Lifetime: started when the ledger's flusher thread starts (:meth:`FlushWorker.warm_up`; or
by the first flush, if that one failed), kept for the ledger's life. It exits
when its stdin closes: when :meth:`FlushWorker.stop` closes it, or when the gateway dies,
even by ``SIGKILL`` (the kernel closes the pipe), so it outlives the gateway by at most
the batch it is writing, which is idempotent like every replay.

Failures: a worker that answers an error or dies mid-request raises
:class:`FlushWorkerError` (the segments stay pending, as on a database error); the next
flush starts a new one. When none can be started, or one died on two batches in a row,
:meth:`FlushWorker.write` answers None for ``retry_after_s`` and the gateway writes the
batch itself: no record ever waits on the worker.
"""

from __future__ import annotations

import logging
import os
import select
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger(__name__)

WORKER_MODULE = "aiforge.platform.metering.flusher"
STOP_TIMEOUT_S = 10.0


class FlushWorkerError(Exception):
    """The worker refused a batch or died writing it: the segments stay pending."""


class _Gone(Exception):
    """The worker closed its end of the pipe, or said something that is not an answer."""


class FlushWorker:
    """One flush worker process at a time, started on demand. Not thread-safe: the ledger
    calls it under its flush lock."""

    def __init__(
        self,
        database_url: str,
        *,
        command: Sequence[str] = (sys.executable, "-m", WORKER_MODULE),
        start_timeout_s: float = 60.0,
        retry_after_s: float = 60.0,
    ) -> None:
        self._database_url = database_url
        self._command = tuple(command)
        self._start_timeout_s = start_timeout_s
        self._retry_after_s = retry_after_s
        self._process: subprocess.Popen[bytes] | None = None
        self._buffer = b""
        self._retry_at = 0.0
        self._died_in_a_row = 0

    @property
    def pid(self) -> int | None:
        """The running worker's process id (None before the first batch or after a stop)."""
        return None if self._process is None else self._process.pid

    def write(self, segments: Sequence[tuple[Path, bool]]) -> int | None:
        """Have the worker insert the segments ``(path, adopted)``; return the rows written,
        or None when no worker can run now (the caller then writes them itself).

        Raises :class:`FlushWorkerError` when the worker answered an error or died before
        answering; whether its batch committed is then unknown, and replaying it is safe.
        """
        process = self._running_process()
        if process is None:
            return None
        request = {"segments": [[str(path), adopted] for path, adopted in segments]}
        try:
            self._send(process, request)
            answer = self._receive(process, timeout_s=None)
        except _Gone as exc:
            self._forget(process)
            self._died_in_a_row += 1
            if self._died_in_a_row >= 2:  # the batch itself may kill it: write it here
                self._died_in_a_row = 0
                self._retry_at = time.monotonic() + self._retry_after_s
            raise FlushWorkerError(
                f"flush worker died mid-batch ({exc}, exit code {process.returncode})"
            ) from exc
        self._died_in_a_row = 0
        inserted = answer.get("inserted")
        if isinstance(inserted, int):
            return inserted
        raise FlushWorkerError(f"flush worker: {answer.get('error', answer)}")

    def warm_up(self) -> bool:
        """Start the worker now, if it is not running (its imports take ~0.6 s of CPU: better
        while the gateway starts than in its first flush under load). True if it runs."""
        return self._running_process() is not None

    def stop(self) -> None:
        """Close the worker's stdin and wait for it to exit (kill it if it does not)."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.warning("usage ledger: flush worker %d did not stop; killing it", process.pid)
            self._kill(process)
        finally:
            if process.stdout is not None:
                process.stdout.close()

    def _running_process(self) -> subprocess.Popen[bytes] | None:
        process = self._process
        if process is not None and process.poll() is None:
            return process
        if process is not None:  # it died between batches: nothing was in flight
            log.warning("usage ledger: flush worker exited (code %s)", process.returncode)
            self._forget(process)
        if time.monotonic() < self._retry_at:
            return None
        try:
            self._process = self._start()
        except (OSError, _Gone, FlushWorkerError) as exc:
            self._retry_at = time.monotonic() + self._retry_after_s
            log.warning(
                "usage ledger: no flush worker (%s); flushing in the gateway, retrying in %.0f s",
                exc,
                self._retry_after_s,
            )
            return None
        return self._process

    def _start(self) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            self._command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0
        )
        self._buffer = b""
        try:
            self._send(process, {"database_url": self._database_url})
            answer = self._receive(process, timeout_s=self._start_timeout_s)
        except BaseException:
            self._forget(process)
            raise
        if answer.get("ready") is not True:
            self._forget(process)
            raise FlushWorkerError(f"the flush worker did not start: {answer.get('error')}")
        return process

    def _send(self, process: subprocess.Popen[bytes], message: dict[str, Any]) -> None:
        assert process.stdin is not None
        data = memoryview(orjson.dumps(message) + b"\n")
        try:
            while data:
                data = data[os.write(process.stdin.fileno(), data) :]
        except BrokenPipeError as exc:
            raise _Gone("it closed its stdin") from exc

    def _receive(
        self, process: subprocess.Popen[bytes], *, timeout_s: float | None
    ) -> dict[str, Any]:
        """The next answer line; a timeout only while starting (a batch may take long)."""
        assert process.stdout is not None
        fd = process.stdout.fileno()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while b"\n" not in self._buffer:
            if deadline is not None:
                ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
                if not ready:
                    raise _Gone(f"no answer within {timeout_s:.0f} s")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise _Gone("it closed its stdout")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            answer = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise _Gone("an answer that is not JSON") from exc
        if not isinstance(answer, dict):
            raise _Gone("an answer that is not an object")
        return answer

    def _forget(self, process: subprocess.Popen[bytes]) -> None:
        """Kill (if needed) and reap ``process``, and close our ends of its pipes."""
        if self._process is process:
            self._process = None
        self._buffer = b""
        self._kill(process)
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                pipe.close()

    @staticmethod
    def _kill(process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            process.kill()
        process.wait()
