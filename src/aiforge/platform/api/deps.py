"""FastAPI dependencies shared by every ``/admin/v1`` router.

``CurrentPrincipal`` authenticates the caller through ``request.app.state.authenticator``
(the same :class:`aiforge.gateway.access.Authenticator` the gateway uses for ``/v1``), so
an admin route answers from the in-memory key cache like every other route. Routers must
be built with :func:`aiforge.platform.api.errors.admin_router` so that ``AuthError`` and
the platform's refusals leave in OpenAI's error envelope.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from aiforge.gateway.access import Authenticator
from aiforge.platform.domain.access import check_project
from aiforge.types import Principal

PRINCIPAL_SCOPE_KEY = "aiforge.admin_principal"
"""Where :func:`aiforge.platform.api.guard.admit` leaves the principal it authenticated."""


def _authenticator(request: Request) -> Authenticator:
    authenticator: Authenticator | None = getattr(request.app.state, "authenticator", None)
    if authenticator is None:
        raise RuntimeError("app.state.authenticator is not set; the admin API needs one")
    return authenticator


def current_principal(request: Request) -> Principal:
    """Resolve the ``Authorization`` header; raises ``AuthError`` (401/403) when invalid."""
    admitted = request.scope.get(PRINCIPAL_SCOPE_KEY)
    if isinstance(admitted, Principal):
        return admitted
    return _authenticator(request).authenticate(request.headers.get("authorization"))


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def authorize_project(principal: Principal, project_id: str, *, write: bool) -> None:
    """Allow reading (or changing, with ``write``) project ``project_id``.

    Platform admin: anything. Any other key: only its own project, changes only with role
    owner/admin (else 403). Another project answers 404 (``NotFound``): its existence is
    never revealed.
    """
    check_project(principal, project_id, write=write)


__all__ = ["PRINCIPAL_SCOPE_KEY", "CurrentPrincipal", "authorize_project", "current_principal"]
