"""A real HTTP server on 127.0.0.1 that serves images, redirects and misbehaviour, for
testing image URL fetching (:mod:`aiforge.gateway.images`) without leaving the machine.

Routes: ``/image.png`` (and ``.jpg``, ``.gif``, ``.webp``; ``?w=&h=`` sizes it), ``/bomb.png``
(a header declaring 30000x30000 pixels), ``/text`` (``text/plain``), ``/big`` (2 MiB with
its length), ``/big-chunked`` (2 MiB without), ``/slow`` (answers after 5 s), ``/missing``
(404), ``/redirect?to=URL`` (302), ``/loop`` (redirects to itself). Every request's path and
``Host`` header are recorded in :attr:`ImageServer.requests`.
"""

from __future__ import annotations

import io
import struct
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import parse_qs, urlsplit

__all__ = ["ImageServer", "bomb_png", "png_bytes"]

_FORMATS = {".png": ("PNG", "image/png"), ".jpg": ("JPEG", "image/jpeg"),
            ".gif": ("GIF", "image/gif"), ".webp": ("WEBP", "image/webp")}  # fmt: skip


def png_bytes(width: int = 64, height: int = 48, image_format: str = "PNG") -> bytes:
    """A small gradient image encoded as ``image_format``."""
    from PIL import Image

    image = Image.new("RGB", (width, height))
    image.putdata([(x * 4 % 256, y * 4 % 256, 128) for y in range(height) for x in range(width)])
    out = io.BytesIO()
    image.save(out, format=image_format)
    return out.getvalue()


def bomb_png(width: int = 30_000, height: int = 30_000) -> bytes:
    """A tiny PNG whose header declares ``width`` x ``height`` (a decompression bomb's)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")
    )


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        self.server.owner.requests.append((url.path, self.headers.get("Host", "")))
        suffix = url.path[url.path.rfind(".") :] if "." in url.path else ""
        if url.path.startswith("/image") and suffix in _FORMATS:
            image_format, media = _FORMATS[suffix]
            width = int(query.get("w", ["64"])[0])
            height = int(query.get("h", ["48"])[0])
            self._send(200, media, png_bytes(width, height, image_format))
        elif url.path == "/bomb.png":
            self._send(200, "image/png", bomb_png())
        elif url.path == "/text":
            self._send(200, "text/plain", b"not an image")
        elif url.path == "/big":
            self._send(200, "image/png", b"\x89PNG" + b"\x00" * (2 << 20))
        elif url.path == "/big-chunked":
            self._send_chunked(b"\x89PNG" + b"\x00" * (2 << 20))
        elif url.path == "/slow":
            time.sleep(5)
            self._send(200, "image/png", png_bytes())
        elif url.path == "/redirect":
            self._redirect(query["to"][0])
        elif url.path == "/loop":
            self._redirect("/loop")
        else:
            self._send(404, "text/plain", b"not found")

    def _send(self, status: int, media: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", media)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_chunked(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for start in range(0, len(body), 65536):
            piece = body[start : start + 65536]
            self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        self.wfile.write(b"0\r\n\r\n")

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: ImageServer


class ImageServer:
    """``with ImageServer() as server: server.url("/image.png")`` — serves on 127.0.0.1."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def __enter__(self) -> ImageServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
