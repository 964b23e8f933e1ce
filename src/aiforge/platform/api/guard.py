"""What every ``/admin/v1`` request passes before its body is read or parsed.

1. The key: an admin request without a valid key is refused (401) before a byte of its
   body is read, so an anonymous client cannot make the gateway buffer anything.
2. The size: the body is read up to :func:`admin_body_limit` bytes (refused by its
   ``Content-Length`` at once, else as soon as the stream passes the limit: 413), then
   replayed to the route, which parses it as usual.

:class:`aiforge.platform.api.errors.EnvelopeRoute` runs :func:`admit` on every admin
route, so a router built with :func:`~aiforge.platform.api.errors.admin_router` cannot
forget it. The principal found here is kept in the scope, so the route's
``CurrentPrincipal`` dependency does not hash the key twice.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import Message, Receive

from aiforge.gateway.request import read_body
from aiforge.platform.api.deps import PRINCIPAL_SCOPE_KEY, current_principal

ADMIN_MAX_BODY_BYTES = 1024 * 1024
"""The admin API's own ceiling (its bodies are a few hundred bytes): ``Settings``'s
``max_body_bytes``, sized for prompts, applies when it is smaller."""


def admin_body_limit(request: Request) -> int:
    settings = getattr(request.app.state, "settings", None)
    configured = getattr(settings, "max_body_bytes", None)
    if isinstance(configured, int) and 0 <= configured < ADMIN_MAX_BODY_BYTES:
        return configured
    return ADMIN_MAX_BODY_BYTES


async def admit(request: Request) -> Request:
    """Authenticate, then read the body within the limit; return the request to route.

    Raises ``AuthError`` (401/403) or a 413 ``OpenAIError``, having read nothing of the
    body in the first case and at most the limit in the second."""
    request.scope[PRINCIPAL_SCOPE_KEY] = current_principal(request)
    body = await read_body(request, admin_body_limit(request))
    return Request(request.scope, _replay(body, request.receive))


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive channel that hands the route the body already read, then the client's
    later messages (a disconnect)."""
    pending = True

    async def replay() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
