"""The authorization matrix (pure): who may read or change which project's resources."""

from __future__ import annotations

import pytest

from aiforge.platform.api.deps import authorize_project
from aiforge.platform.domain.access import (
    check_grant,
    check_key_target,
    check_organization,
    narrow_allowlist,
    require_platform_admin,
)
from aiforge.platform.domain.errors import Forbidden, NotFound
from aiforge.platform.domain.roles import ROLES, Role, can_grant, can_manage, parse_role
from aiforge.types import Principal


def key(
    role: Role,
    *,
    project: str = "proj_a",
    org: str = "org_a",
    admin: bool = False,
    models: frozenset[str] | None = None,
) -> Principal:
    return Principal(
        key_id=f"key_{role}",
        project_id=project,
        organization_id=org,
        role=role,
        is_platform_admin=admin,
        allowed_models=models,
    )


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("write", [False, True])
def test_another_projects_key_gets_not_found_whatever_its_role(role: Role, write: bool) -> None:
    with pytest.raises(NotFound):
        authorize_project(key(role, project="proj_b"), "proj_a", write=write)


@pytest.mark.parametrize(
    ("role", "may_write"),
    [("owner", True), ("admin", True), ("member", False), ("viewer", False)],
)
def test_own_project_reads_for_every_role_writes_for_managers(role: Role, may_write: bool) -> None:
    principal = key(role)
    authorize_project(principal, "proj_a", write=False)
    if may_write:
        authorize_project(principal, "proj_a", write=True)
    else:
        with pytest.raises(Forbidden):
            authorize_project(principal, "proj_a", write=True)


@pytest.mark.parametrize("write", [False, True])
def test_platform_admin_may_do_anything(write: bool) -> None:
    admin = key("viewer", admin=True)
    authorize_project(admin, "proj_z", write=write)
    check_organization(admin, "org_z", write=write)
    require_platform_admin(admin, "anything")
    check_grant(admin, "owner")
    check_key_target(admin, target_role="owner", target_is_admin=True)


def test_organizations_are_read_by_their_projects_and_changed_by_admins_only() -> None:
    owner = key("owner")
    check_organization(owner, "org_a", write=False)
    with pytest.raises(Forbidden):
        check_organization(owner, "org_a", write=True)
    with pytest.raises(NotFound):
        check_organization(owner, "org_b", write=False)
    with pytest.raises(Forbidden):
        require_platform_admin(owner, "create a project")


@pytest.mark.parametrize("granter", ROLES)
@pytest.mark.parametrize("granted", ROLES)
def test_no_key_grants_a_role_above_its_own(granter: Role, granted: Role) -> None:
    order = ["viewer", "member", "admin", "owner"]
    allowed = order.index(granted) <= order.index(granter)
    assert can_grant(granter, granted) is allowed
    if allowed:
        check_grant(key(granter), granted)
    else:
        with pytest.raises(Forbidden):
            check_grant(key(granter), granted)


def test_only_a_platform_admin_changes_a_platform_admin_key() -> None:
    with pytest.raises(Forbidden):
        check_key_target(key("owner"), target_role="owner", target_is_admin=True)
    with pytest.raises(Forbidden):
        check_key_target(key("admin"), target_role="owner", target_is_admin=False)
    check_key_target(key("admin"), target_role="member", target_is_admin=False)


def test_allowlists_only_narrow() -> None:
    assert narrow_allowlist(None, None) is None
    assert narrow_allowlist(None, ["b", "a", "a"]) == ["a", "b"]
    limited = frozenset({"a", "b"})
    assert narrow_allowlist(limited, None) == ["a", "b"]
    assert narrow_allowlist(limited, ["a"]) == ["a"]
    with pytest.raises(Forbidden) as refused:
        narrow_allowlist(limited, ["a", "c"])
    assert refused.value.param == "allowed_models"


def test_roles() -> None:
    assert [role for role in ROLES if can_manage(role)] == ["owner", "admin"]
    assert parse_role("viewer") == "viewer"
    with pytest.raises(ValueError, match="unknown role"):
        parse_role("root")
