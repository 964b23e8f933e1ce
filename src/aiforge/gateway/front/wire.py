"""Responses as bytes on the front's wire: a head, a body, chunked framing. Pure."""

from __future__ import annotations

from collections.abc import Iterable
from http import HTTPStatus

_REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}
CHUNKED_END = b"0\r\n\r\n"


def response_head(
    status: int,
    headers: Iterable[tuple[bytes, bytes]],
    extra: Iterable[tuple[bytes, bytes]],
    *,
    chunked: bool,
    close: bool,
) -> bytes:
    """The status line and header block: ``headers`` (the response's own) then ``extra``
    (the server's: request id, date), ``Transfer-Encoding: chunked`` for a body of unknown
    length and ``Connection: close`` when the connection ends with this response."""
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b""))]
    lines += [name + b": " + value + b"\r\n" for name, value in headers]
    lines += [name + b": " + value + b"\r\n" for name, value in extra]
    if chunked:
        lines.append(b"transfer-encoding: chunked\r\n")
    if close:
        lines.append(b"connection: close\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)


def chunk(data: bytes) -> bytes:
    """``data`` as one chunk of chunked transfer coding (never the empty last chunk)."""
    return b"%x\r\n%b\r\n" % (len(data), data)
