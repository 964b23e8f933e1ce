"""Roles and what each may do. Pure functions over :data:`Role`.

* ``owner`` / ``admin`` — manage the project: its keys, key limits, members.
* ``member`` — use the API and read the project's settings.
* ``viewer`` — read only.
"""

from __future__ import annotations

from typing import Literal, get_args

Role = Literal["owner", "admin", "member", "viewer"]

ROLES: tuple[Role, ...] = get_args(Role)
_RANK: dict[Role, int] = {"viewer": 0, "member": 1, "admin": 2, "owner": 3}
MANAGER_ROLES: frozenset[Role] = frozenset({"owner", "admin"})


def rank(role: Role) -> int:
    """Higher is more privileged."""
    return _RANK[role]


def can_manage(role: Role) -> bool:
    """May this role change the project's keys, key limits and members?"""
    return role in MANAGER_ROLES


def can_grant(granter: Role, granted: Role) -> bool:
    """A caller can hand out its own role or a lower one, never a higher one."""
    return rank(granted) <= rank(granter)


def parse_role(value: str) -> Role:
    """Validate a role name from storage or input."""
    for role in ROLES:
        if role == value:
            return role
    raise ValueError(f"unknown role {value!r}; expected one of {', '.join(ROLES)}")
