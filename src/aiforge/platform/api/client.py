"""A small HTTP client for the admin API, used by the ``aiforge`` admin commands.

Connection: ``--url`` / ``AIFORGE_URL`` (default ``http://127.0.0.1:8000``) and
``--api-key`` / ``AIFORGE_API_KEY``; without a key, the admin key a local ``aiforge serve``
stored in ``<data_dir>/admin-key`` is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
ADMIN_KEY_FILE = "admin-key"


class AdminApiError(Exception):
    """The admin API refused a request (its OpenAI-envelope message), or was unreachable."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def stored_admin_key(data_dir: Path) -> str | None:
    path = data_dir / ADMIN_KEY_FILE
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


@dataclass
class AdminApiClient:
    url: str
    api_key: str
    timeout_s: float = 30.0
    transport: httpx.BaseTransport | None = None
    """Replaces the network (tests pass an ASGI/WSGI or mock transport)."""

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        """Send one request; return the decoded JSON body (None for 204)."""
        headers = {"Authorization": f"Bearer {self.api_key}"}
        query = {name: value for name, value in (params or {}).items() if value is not None}
        try:
            with httpx.Client(
                base_url=self.url.rstrip("/"), timeout=self.timeout_s, transport=self.transport
            ) as client:
                response = client.request(method, path, json=json, params=query, headers=headers)
        except httpx.ConnectError as error:
            raise AdminApiError(
                f"no aiforge server is answering at {self.url}: start one with "
                "`aiforge serve`, or point --url / AIFORGE_URL at a running one"
            ) from error
        except httpx.HTTPError as error:
            raise AdminApiError(f"cannot reach aiforge at {self.url}: {error}") from error
        if response.status_code >= 400:
            raise AdminApiError(_error_message(response), status=response.status_code)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:200]}"
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return f"{error['message']} (HTTP {response.status_code})"
    return f"HTTP {response.status_code}: {response.text[:200]}"
