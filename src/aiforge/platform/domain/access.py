"""Authorization decisions: who may read or change what. Pure; raises domain errors.

The one rule that matters most: a key of project A can never read, list or change
anything of project B. Another project's resources answer :class:`NotFound` — the same
as a resource that does not exist — so a caller cannot probe for ids.
"""

from __future__ import annotations

from aiforge.platform.domain.errors import Forbidden, NotFound
from aiforge.platform.domain.roles import Role, can_grant, can_manage, parse_role
from aiforge.types import Principal


def check_project(principal: Principal, project_id: str, *, write: bool) -> None:
    """Allow ``principal`` to read (or, with ``write``, change) project ``project_id``.

    Platform admins may do anything. Any other key sees only its own project, and
    changes it only with a managing role (owner, admin).
    """
    if principal.is_platform_admin:
        return
    if principal.project_id != project_id:
        raise NotFound(f"project {project_id!r} not found", param="project_id")
    if write and not can_manage(parse_role(principal.role)):
        raise Forbidden(
            f"a key with role {principal.role!r} cannot change this project; "
            "it needs role 'owner' or 'admin'"
        )


def check_organization(principal: Principal, organization_id: str, *, write: bool) -> None:
    """Organizations are read by their projects' keys and changed by platform admins only
    (an organization spans projects; no project key may act across them)."""
    if principal.is_platform_admin:
        return
    if principal.organization_id != organization_id:
        raise NotFound(f"organization {organization_id!r} not found", param="organization_id")
    if write:
        raise Forbidden("only a platform admin key can change an organization")


def require_platform_admin(principal: Principal, action: str) -> None:
    """Actions that span tenants (create organizations, projects, users; set project limits)."""
    if not principal.is_platform_admin:
        raise Forbidden(f"only a platform admin key can {action}")


def check_grant(principal: Principal, role: Role) -> None:
    """A caller may create keys or memberships with its own role or a lower one."""
    if principal.is_platform_admin:
        return
    if not can_grant(parse_role(principal.role), role):
        raise Forbidden(
            f"a key with role {principal.role!r} cannot grant role {role!r}", param="role"
        )


def check_key_target(principal: Principal, *, target_role: Role, target_is_admin: bool) -> None:
    """May ``principal`` change (update, revoke, limit) an existing key of its project?

    Never a platform admin key unless the caller is one, and never a key whose role
    outranks the caller's.
    """
    if principal.is_platform_admin:
        return
    if target_is_admin:
        raise Forbidden("only a platform admin key can change a platform admin key")
    check_grant(principal, target_role)


def narrow_allowlist(
    granter: frozenset[str] | None, requested: list[str] | None
) -> list[str] | None:
    """The model allowlist a new or updated key may get from ``granter``.

    A caller limited to some models cannot hand out a key for others: no list means the
    caller's own list, and a list must be a subset of it.
    """
    if granter is None:
        return None if requested is None else sorted(set(requested))
    if requested is None:
        return sorted(granter)
    extra = set(requested) - granter
    if extra:
        raise Forbidden(
            f"this key cannot grant access to {', '.join(sorted(extra))}", param="allowed_models"
        )
    return sorted(set(requested))
