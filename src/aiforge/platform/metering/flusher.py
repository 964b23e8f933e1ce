"""The flush worker process: ``python -m aiforge.platform.metering.flusher``.

Started by the gateway's :class:`~aiforge.platform.metering.worker.FlushWorker` (the
protocol and the reasons are there). It reads one JSON line per request on stdin and
answers one on stdout: the database URL first, then batches of sealed segments, each
read, sorted and inserted in one transaction (:func:`~aiforge.platform.metering.replay.
write_segments`). It deletes nothing and locks nothing: the gateway does both.

It exits when stdin closes, so it cannot outlive its gateway (a killed one's pipe is
closed by the kernel). ``Ctrl-C`` is left to the gateway, which stops it once its own
last flush is done. Its errors never hold the database URL's password: every message
that leaves the process goes through :func:`redact`.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote, quote_plus

import orjson
from sqlalchemy import Engine, make_url

from aiforge.platform.db.engine import make_engine
from aiforge.platform.metering.replay import write_segments

MAX_ERROR_CHARS = 2_000


def redact(text: str, database_url: str) -> str:
    """``text`` without the database URL or its password (in any spelling), shortened."""
    secrets = [database_url]
    try:
        password = make_url(database_url).password
    except Exception:  # an unparsable URL: only its whole spelling is known
        password = None
    if password:
        secret = str(password)
        secrets += [quote(secret, safe=""), quote_plus(secret), secret]
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text[:MAX_ERROR_CHARS]


def describe(exc: BaseException, database_url: str) -> str:
    return redact(f"{type(exc).__name__}: {exc}", database_url)


def handle(engine: Engine, request: Mapping[str, Any]) -> dict[str, Any]:
    """Insert the segments of one request; the answer to send back."""
    segments = [(Path(str(path)), bool(adopted)) for path, adopted in request["segments"]]
    return {"inserted": write_segments(engine, segments)}


def serve(requests: BinaryIO, answers: int) -> int:
    """Answer ``requests`` (the gateway's pipe) on the descriptor ``answers`` until the
    pipe closes; return the exit status."""
    hello = requests.readline()
    if not hello:
        return 0
    database_url = ""
    try:
        database_url = str(orjson.loads(hello)["database_url"])
        engine = make_engine(database_url)
    except Exception as exc:
        _answer(answers, {"error": describe(exc, database_url)})
        return 1
    try:
        _answer(answers, {"ready": True})
        for line in requests:
            try:
                answer = handle(engine, orjson.loads(line))
            except Exception as exc:  # the database, or a segment: the gateway keeps it
                answer = {"error": describe(exc, database_url)}
            _answer(answers, answer)
    except BrokenPipeError:  # the gateway is gone; what committed is committed
        return 0
    finally:
        engine.dispose()
    return 0


def main() -> int:
    if any(arg in ("-h", "--help") for arg in sys.argv[1:]):
        print(__doc__)
        print(
            "Not a command to run by hand: aiforge serve starts it (AIFORGE_USAGE_FLUSH_PROCESS)."
        )
        return 0
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Answers get a descriptor of their own; anything printed goes to stderr instead.
    answers = os.dup(sys.stdout.fileno())
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    logging.basicConfig(
        level=logging.WARNING, format="aiforge flush worker %(process)d: %(message)s"
    )
    return serve(sys.stdin.buffer, answers)


def _answer(fd: int, message: Mapping[str, Any]) -> None:
    data = memoryview(orjson.dumps(message) + b"\n")
    while data:
        data = data[os.write(fd, data) :]


if __name__ == "__main__":
    sys.exit(main())
