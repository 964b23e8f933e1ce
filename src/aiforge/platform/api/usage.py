"""``GET /admin/v1/usage``: usage totals by key, project, model or day; JSON or CSV.

A platform admin key sees every project (or one, with ``project_id``); any other key sees
only its own project's usage, and naming another project answers 404 like every other
admin route. The route holds no query: it asks the :class:`UsageLedger`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel

from aiforge.platform.api.deps import CurrentPrincipal, authorize_project
from aiforge.platform.api.errors import admin_router
from aiforge.platform.api.fields import UtcTimestamp
from aiforge.platform.metering.ledger import UsageLedger
from aiforge.platform.metering.queries import GroupBy, UsageFilter, totals_csv
from aiforge.types import Principal

ERROR_RESPONSES: dict[int | str, dict[str, str]] = {
    400: {"description": "Invalid parameter (OpenAI error envelope)."},
    401: {"description": "Missing or invalid API key."},
    404: {"description": "The project does not exist or belongs to another project's key."},
}


class UsageTotalPublic(BaseModel):
    group: str
    """The key id, project id, model name or UTC day (``YYYY-MM-DD``)."""
    requests: int
    errors: int
    """Requests answered with a status >= 400."""
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    total_tokens: int


class UsageReport(BaseModel):
    object: Literal["usage.report"] = "usage.report"
    group_by: GroupBy
    since: datetime | None
    until: datetime | None
    project_id: str | None
    data: list[UsageTotalPublic]


def visible_project(principal: Principal, project_id: str | None) -> str | None:
    """The project whose usage the caller may see (None: every project, admins only)."""
    if project_id is None and not principal.is_platform_admin:
        return principal.project_id
    if project_id is not None:
        authorize_project(principal, project_id, write=False)
    return project_id


def build_usage_router(ledger: UsageLedger) -> APIRouter:
    router = admin_router(prefix="/admin/v1", responses=ERROR_RESPONSES)

    @router.get(
        "/usage",
        tags=["usage"],
        summary="Usage totals by key, project, model or day (JSON, or CSV with format=csv)",
        response_model=UsageReport,
        responses={200: {"content": {"text/csv": {}}}},
    )
    async def usage(
        principal: CurrentPrincipal,
        group_by: Annotated[GroupBy, Query(description="key, project, model or day")] = "day",
        since: Annotated[
            UtcTimestamp | None, Query(description="Inclusive (ISO 8601; no zone: UTC)")
        ] = None,
        until: Annotated[
            UtcTimestamp | None, Query(description="Exclusive (ISO 8601; no zone: UTC)")
        ] = None,
        project_id: str | None = None,
        key_id: str | None = None,
        model: str | None = None,
        format: Annotated[Literal["json", "csv"], Query()] = "json",
    ) -> UsageReport | Response:
        project = visible_project(principal, project_id)
        filters = UsageFilter(since, until, project, key_id, model)
        totals = await ledger.totals(group_by=group_by, filters=filters)
        if format == "csv":
            return Response(
                totals_csv(totals, group_by),
                media_type="text/csv",
                headers={"Content-Disposition": f'attachment; filename="usage-{group_by}.csv"'},
            )
        return UsageReport(
            group_by=group_by,
            since=filters.since,
            until=filters.until,
            project_id=project,
            data=[UsageTotalPublic.model_validate(t, from_attributes=True) for t in totals],
        )

    return router
