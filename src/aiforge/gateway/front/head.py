"""The request heads the gateway's front answers itself, read by hand. Pure.

The front (:mod:`aiforge.gateway.front.protocol`) serves only the inference routes' plain
case natively: ``POST <route> HTTP/1.1`` with one ``Content-Length``, no transfer coding, no
``Expect`` and no ``Upgrade``, every header line a token, a colon and a value without
control characters. :func:`read_head` returns None for anything else — a query string,
another method or version, chunked uploads, folded or malformed lines, duplicated or
conflicting framing — and the front then hands the connection to uvicorn, whose parser
answers or refuses it as it always did. Strict on purpose: a head read here must mean the
same thing to llhttp, so no request can be framed one way here and another way there.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from aiforge.types import RequestKind

HEAD_END = b"\r\n\r\n"
MAX_HEAD_BYTES = 16 * 1024
"""The longest head of an inference request the front waits for (a 431 beyond it)."""
_FIELDS = re.compile(rb"(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[^\x00-\x08\x0a-\x1f\x7f]*\r\n)*")
"""Header lines: a token, a colon, a value without control characters (tab allowed)."""
_FIELD = re.compile(r"([^:]+):[ \t]*([^\r]*)\r\n")
_REFUSED = frozenset({"transfer-encoding", "expect", "upgrade"})
"""Headers whose presence sends the request to uvicorn (a transfer coding, a protocol change)."""


@dataclass(slots=True)
class RequestHead:
    """A request head the front serves itself."""

    path: str
    kind: RequestKind
    headers: dict[str, str]
    """Names in lower case, the first value of each (latin-1), as Starlette's ``get``."""
    content_length: int
    keep_alive: bool
    """False when the client sent ``Connection: close``."""
    size: int
    """Bytes of the head, its blank line included: the body starts there."""


def request_line_may_match(data: bytes, routes: Mapping[str, RequestKind]) -> bool:
    """Whether ``data``, the start of a request, can still become ``POST <route> HTTP/1.1``
    for one of ``routes``: the front keeps reading; when False it hands the connection
    over at once."""
    line_end = data.find(b"\r\n")
    line = data if line_end < 0 else data[:line_end]
    for path in routes:
        wanted = b"POST " + path.encode() + b" HTTP/1.1"
        if (line_end < 0 and wanted.startswith(line)) or line == wanted:
            return True
    return False


def read_head(data: bytes, end: int, routes: Mapping[str, RequestKind]) -> RequestHead | None:
    """The head ``data[:end]`` (``end``: where :data:`HEAD_END` starts) when the front serves
    it, else None."""
    line_end = data.find(b"\r\n")
    parts = data[:line_end].split(b" ")
    if len(parts) != 3 or parts[0] != b"POST" or parts[2] != b"HTTP/1.1":
        return None
    path = parts[1].decode("latin-1")
    kind = routes.get(path)
    if kind is None:
        return None
    fields = data[line_end + 2 : end + 2]
    if not _FIELDS.fullmatch(fields):
        return None
    pairs = _FIELD.findall(fields.decode("latin-1"))
    headers = {name.lower(): value.rstrip(" \t") for name, value in reversed(pairs)}  # first wins
    if not headers.keys().isdisjoint(_REFUSED):
        return None
    length = headers.get("content-length")
    if length is None or not length.isascii() or not length.isdigit():
        return None
    if len(headers) < len(pairs) and _repeated(pairs, "content-length"):
        return None
    keep_alive = "close" not in headers.get("connection", "").lower()
    return RequestHead(path, kind, headers, int(length), keep_alive, end + len(HEAD_END))


def _repeated(pairs: list[tuple[str, str]], wanted: str) -> bool:
    return sum(name.lower() == wanted for name, _ in pairs) > 1
