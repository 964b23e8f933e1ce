"""Organizations, projects, users and memberships, authorized per caller.

Listing never reveals another project: a project key lists only its own project and the
users who are members of it.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session

from aiforge.platform.api.schemas import (
    MembershipCreate,
    OrganizationCreate,
    ProjectCreate,
    UserCreate,
)
from aiforge.platform.db.tenancy import MembershipRow, OrganizationRow, ProjectRow, UserRow
from aiforge.platform.domain.access import (
    check_grant,
    check_organization,
    check_project,
    require_platform_admin,
)
from aiforge.platform.domain.errors import InvalidRequest, NotFound
from aiforge.platform.domain.roles import parse_role
from aiforge.platform.services import repository as repo
from aiforge.platform.services.unit_of_work import UnitOfWork
from aiforge.types import Principal


class TenancyService:
    def __init__(self, uow: UnitOfWork) -> None:
        self._uow = uow

    # -- organizations --------------------------------------------------------------
    def create_organization(
        self, principal: Principal, data: OrganizationCreate
    ) -> OrganizationRow:
        require_platform_admin(principal, "create an organization")
        with self._uow.write(conflict=f"an organization named {data.name!r} exists") as session:
            return repo.add_organization(session, name=data.name)

    def list_organizations(self, principal: Principal) -> Sequence[OrganizationRow]:
        only = None if principal.is_platform_admin else principal.organization_id
        with self._uow.read() as session:
            return repo.list_organizations(session, only_id=only)

    def get_organization(self, principal: Principal, organization_id: str) -> OrganizationRow:
        check_organization(principal, organization_id, write=False)
        with self._uow.read() as session:
            row = repo.get_organization(session, organization_id=organization_id)
        if row is None:
            raise NotFound(f"organization {organization_id!r} not found", param="organization_id")
        return row

    # -- projects ----------------------------------------------------------------------
    def create_project(self, principal: Principal, data: ProjectCreate) -> ProjectRow:
        require_platform_admin(principal, "create a project")
        conflict = f"a project named {data.name!r} exists in this organization"
        with self._uow.write(conflict=conflict) as session:
            if repo.get_organization(session, organization_id=data.organization_id) is None:
                raise NotFound(
                    f"organization {data.organization_id!r} not found", param="organization_id"
                )
            return repo.add_project(session, organization_id=data.organization_id, name=data.name)

    def list_projects(
        self, principal: Principal, *, organization_id: str | None = None
    ) -> Sequence[ProjectRow]:
        only = None if principal.is_platform_admin else principal.project_id
        with self._uow.read() as session:
            return repo.list_projects(session, organization_id=organization_id, only_id=only)

    def get_project(self, principal: Principal, project_id: str) -> ProjectRow:
        check_project(principal, project_id, write=False)
        with self._uow.read() as session:
            row = repo.get_project(session, project_id=project_id)
        if row is None:
            raise NotFound(f"project {project_id!r} not found", param="project_id")
        return row

    # -- users -----------------------------------------------------------------------------
    def create_user(self, principal: Principal, data: UserCreate) -> UserRow:
        require_platform_admin(principal, "create a user")
        with self._uow.write(conflict=f"a user with email {data.email!r} exists") as session:
            return repo.add_user(session, email=data.email, name=data.name)

    def list_users(self, principal: Principal) -> Sequence[UserRow]:
        project = None if principal.is_platform_admin else principal.project_id
        with self._uow.read() as session:
            return repo.list_users(session, project_id=project)

    def get_user(self, principal: Principal, user_id: str) -> UserRow:
        with self._uow.read() as session:
            row = repo.get_user(session, user_id=user_id)
            visible = row is not None and (
                principal.is_platform_admin
                or repo.user_in_project(session, user_id=user_id, project_id=principal.project_id)
            )
        if row is None or not visible:
            raise NotFound(f"user {user_id!r} not found", param="user_id")
        return row

    # -- memberships -------------------------------------------------------------------------
    def put_project_member(
        self, principal: Principal, project_id: str, data: MembershipCreate
    ) -> MembershipRow:
        check_project(principal, project_id, write=True)
        check_grant(principal, data.role)
        with self._uow.write() as session:
            project = repo.get_project(session, project_id=project_id)
            if project is None:
                raise NotFound(f"project {project_id!r} not found", param="project_id")
            user = self._member_user(session, principal, data)
            return repo.put_membership(
                session,
                user_id=user.id,
                organization_id=project.organization_id,
                project_id=project_id,
                role=data.role,
            )

    @staticmethod
    def _member_user(session: Session, principal: Principal, data: MembershipCreate) -> UserRow:
        """The user to add: by id (platform admins, or a user already visible) or by email
        (found or created, so a project admin can invite people)."""
        if data.user_id is not None:
            user = repo.get_user(session, user_id=data.user_id)
            if user is None or not (
                principal.is_platform_admin
                or repo.user_in_project(
                    session, user_id=data.user_id, project_id=principal.project_id
                )
            ):
                raise NotFound(f"user {data.user_id!r} not found", param="user_id")
            return user
        if data.email is None:
            raise InvalidRequest("send user_id or email", param="user_id")
        return repo.find_user(session, email=data.email) or repo.add_user(
            session, email=data.email, name=data.name
        )

    def list_project_members(
        self, principal: Principal, project_id: str
    ) -> Sequence[MembershipRow]:
        organization_id = self.get_project(principal, project_id).organization_id
        with self._uow.read() as session:
            return repo.list_memberships(
                session, organization_id=organization_id, project_id=project_id
            )

    def remove_project_member(self, principal: Principal, project_id: str, user_id: str) -> None:
        check_project(principal, project_id, write=True)
        with self._uow.write() as session:
            project = repo.get_project(session, project_id=project_id)
            membership = None
            if project is not None:
                membership = repo.find_membership(
                    session,
                    user_id=user_id,
                    organization_id=project.organization_id,
                    project_id=project_id,
                )
            if membership is None:
                raise NotFound(f"user {user_id!r} is not a member of this project", param="user_id")
            check_grant(principal, parse_role(membership.role))
            repo.delete_membership(session, membership=membership)

    def put_organization_member(
        self, principal: Principal, organization_id: str, data: MembershipCreate
    ) -> MembershipRow:
        check_organization(principal, organization_id, write=False)
        require_platform_admin(principal, "manage organization members")
        with self._uow.write() as session:
            if repo.get_organization(session, organization_id=organization_id) is None:
                raise NotFound(
                    f"organization {organization_id!r} not found", param="organization_id"
                )
            user = self._member_user(session, principal, data)
            return repo.put_membership(
                session,
                user_id=user.id,
                organization_id=organization_id,
                project_id=None,
                role=data.role,
            )

    def list_organization_members(
        self, principal: Principal, organization_id: str
    ) -> Sequence[MembershipRow]:
        check_organization(principal, organization_id, write=False)
        require_platform_admin(principal, "list organization members")
        with self._uow.read() as session:
            return repo.list_memberships(session, organization_id=organization_id, project_id=None)
