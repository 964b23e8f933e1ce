"""A fake Hugging Face Hub on loopback: the few routes ``snapshot_download`` uses.

The real hubs cannot be reached from test machines, so downloads are exercised against
this server: model info, the file tree, and ``resolve`` (HEAD and GET) per file.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class FakeHub:
    url: str
    repo_id: str
    files: dict[str, bytes]
    requests: list[str] = field(default_factory=list)


def _handler(hub: FakeHub) -> type[http.server.BaseHTTPRequestHandler]:
    repo = re.escape(hub.repo_id)

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def do_GET(self) -> None:
            self._answer(body=True)

        def _answer(self, *, body: bool) -> None:
            path = self.path.split("?")[0]
            hub.requests.append(f"{self.command} {path}")
            if re.fullmatch(rf"/api/models/{repo}(/revision/[^/]+)?", path):
                info = {"id": hub.repo_id, "sha": COMMIT,
                        "siblings": [{"rfilename": name} for name in hub.files]}  # fmt: skip
                return self._send(200, json.dumps(info).encode(), body=body)
            if re.fullmatch(rf"/api/models/{repo}/tree/.*", path):
                tree = [
                    {"type": "file", "path": name, "size": len(data),
                     "oid": hashlib.sha1(data).hexdigest()}
                    for name, data in hub.files.items()
                ]  # fmt: skip
                return self._send(200, json.dumps(tree).encode(), body=body)
            match = re.fullmatch(rf"/{repo}/resolve/[^/]+/(.+)", path)
            if match and match.group(1) in hub.files:
                data = hub.files[match.group(1)]
                etag = f'"{hashlib.sha1(data).hexdigest()}"'
                return self._send(200, data, body=body, ETag=etag, **{"X-Repo-Commit": COMMIT})
            return self._send(404, b"{}", body=body)

        def _send(self, status: int, data: bytes, *, body: bool, **headers: str) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if body:
                self.wfile.write(data)

    return Handler


@contextmanager
def running_fake_hub() -> Iterator[FakeHub]:
    """Serve a two-file repository ``Acme/Tiny-Model`` on a free loopback port."""
    files = {
        "config.json": json.dumps({"architectures": ["Qwen3ForCausalLM"]}).encode(),
        "model.safetensors": bytes(range(256)) * 2048,
    }
    hub = FakeHub(url="", repo_id="Acme/Tiny-Model", files=files)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
