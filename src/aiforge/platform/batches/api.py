"""``/v1/batches``: OpenAI's Batch API, per project, with the project API keys of ``/v1``.

Thin: authenticate (the route class admits the key before reading the small JSON body),
call one :class:`BatchService` method, shape the answer. Another project's batch is a 404.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from aiforge.platform.api.deps import CurrentPrincipal
from aiforge.platform.api.errors import admin_router
from aiforge.platform.batches.schemas import BatchCreate, BatchList, BatchPublic
from aiforge.platform.batches.service import MAX_LIST_LIMIT, BatchService

__all__ = ["build_batches_router"]

ERROR_RESPONSES: dict[int | str, dict[str, str]] = {
    400: {"description": "An invalid parameter (OpenAI error envelope)."},
    401: {"description": "Missing or invalid API key."},
    404: {"description": "No such batch (or input file) in the key's project."},
    409: {"description": "The batch has finished and cannot be cancelled."},
}


def build_batches_router(service: BatchService) -> APIRouter:
    router = admin_router(prefix="/v1", tags=["Batches"], responses=ERROR_RESPONSES)

    @router.post(
        "/batches",
        summary="Create a batch from an uploaded JSONL file",
        response_model=BatchPublic,
        response_model_exclude_none=True,
    )
    def create_batch(body: BatchCreate, principal: CurrentPrincipal) -> BatchPublic:
        return BatchPublic.of(service.create(principal, body))

    @router.get(
        "/batches",
        summary="List the project's batches, newest first",
        response_model=BatchList,
        response_model_exclude_none=True,
    )
    def list_batches(
        principal: CurrentPrincipal,
        limit: Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT)] = 20,
        after: str | None = None,
    ) -> BatchList:
        rows, more = service.list(principal.project_id, limit=limit, after=after)
        data = [BatchPublic.of(row) for row in rows]
        return BatchList(
            data=data,
            first_id=data[0].id if data else None,
            last_id=data[-1].id if data else None,
            has_more=more,
        )

    @router.get(
        "/batches/{batch_id}",
        summary="Retrieve a batch",
        response_model=BatchPublic,
        response_model_exclude_none=True,
    )
    def retrieve_batch(batch_id: str, principal: CurrentPrincipal) -> BatchPublic:
        return BatchPublic.of(service.get(principal.project_id, batch_id))

    @router.post(
        "/batches/{batch_id}/cancel",
        summary="Cancel a batch (lines not started never run)",
        response_model=BatchPublic,
        response_model_exclude_none=True,
    )
    def cancel_batch(batch_id: str, principal: CurrentPrincipal) -> BatchPublic:
        return BatchPublic.of(service.cancel(principal.project_id, batch_id))

    return router
