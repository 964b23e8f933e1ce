"""``/v1/files``: OpenAI's Files API, per project, with the project API keys of ``/v1``.

Thin: authenticate, call one :class:`FileService` method, shape the answer. The upload
route authenticates before it reads a byte of the body and streams the body to disk
(:meth:`FileService.upload`), so it is a plain route; the others are built with
:func:`~aiforge.platform.api.errors.admin_router` (key first, a small body, errors in
OpenAI's envelope). Every key sees its own project's files only: another project's file
is a 404.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse
from starlette.requests import ClientDisconnect

from aiforge.gateway.errors import error_response
from aiforge.platform.api.deps import CurrentPrincipal, current_principal
from aiforge.platform.api.errors import admin_router, auth_error, client_closed, platform_error
from aiforge.platform.domain.errors import PlatformError
from aiforge.platform.files.schemas import FileDeleted, FileList, FilePublic
from aiforge.platform.files.service import MAX_LIST_LIMIT, FileService
from aiforge.platform.files.upload import UploadError, UploadTooLarge
from aiforge.protocol.openai.errors import OpenAIError
from aiforge.types import AuthError

__all__ = ["build_files_router"]

ERROR_RESPONSES: dict[int | str, dict[str, str]] = {
    400: {"description": "A malformed upload or parameter (OpenAI error envelope)."},
    401: {"description": "Missing or invalid API key."},
    404: {"description": "No such file in the key's project."},
    409: {"description": "The file is the input of a batch still running."},
    413: {"description": "The file is larger than AIFORGE_FILES_MAX_BYTES."},
}

_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "purpose"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "purpose": {
                            "type": "string",
                            "enum": ["assistants", "batch", "fine-tune", "vision", "user_data"],
                        },
                    },
                }
            }
        },
    }
}


def upload_error(error: UploadError) -> OpenAIError:
    status = 413 if isinstance(error, UploadTooLarge) else 400
    code = "file_too_large" if status == 413 else "invalid_upload"
    return OpenAIError(error.message, status_code=status, param=error.param, code=code)


def build_files_router(service: FileService) -> APIRouter:
    router = admin_router(prefix="/v1", tags=["Files"], responses=ERROR_RESPONSES)
    uploads = APIRouter(prefix="/v1", tags=["Files"], responses=ERROR_RESPONSES)

    @uploads.post(
        "/files",
        summary="Upload a file (multipart: file, purpose)",
        response_model=FilePublic,
        openapi_extra=_UPLOAD_BODY,
    )
    async def upload_file(request: Request) -> Response:
        try:
            principal = current_principal(request)
            length = request.headers.get("content-length")
            row = await service.upload(
                principal.project_id,
                content_type=request.headers.get("content-type"),
                content_length=int(length) if length and length.isdigit() else None,
                body=request.stream(),
            )
        except AuthError as error:
            return error_response(auth_error(error))
        except UploadError as error:
            return error_response(upload_error(error))
        except PlatformError as error:
            return error_response(platform_error(error))
        except ClientDisconnect:
            return error_response(client_closed())
        return Response(FilePublic.of(row).model_dump_json(), media_type="application/json")

    @router.get("/files", summary="List the project's files", response_model=FileList)
    def list_files(
        principal: CurrentPrincipal,
        purpose: str | None = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT)] = MAX_LIST_LIMIT,
        order: Literal["asc", "desc"] = "desc",
        after: str | None = None,
    ) -> FileList:
        rows, more = service.list(
            principal.project_id, purpose=purpose, limit=limit, order=order, after=after
        )
        data = [FilePublic.of(row) for row in rows]
        return FileList(
            data=data,
            first_id=data[0].id if data else None,
            last_id=data[-1].id if data else None,
            has_more=more,
        )

    @router.get("/files/{file_id}", summary="Retrieve a file's metadata", response_model=FilePublic)
    def retrieve_file(file_id: str, principal: CurrentPrincipal) -> FilePublic:
        return FilePublic.of(service.get(principal.project_id, file_id))

    @router.get(
        "/files/{file_id}/content",
        summary="Download a file's content",
        response_class=FileResponse,
    )
    def file_content(file_id: str, principal: CurrentPrincipal) -> FileResponse:
        row, path = service.content_path(principal.project_id, file_id)
        return FileResponse(path, media_type="application/octet-stream", filename=row.filename)

    @router.delete("/files/{file_id}", summary="Delete a file", response_model=FileDeleted)
    def delete_file(file_id: str, principal: CurrentPrincipal) -> FileDeleted:
        service.delete(principal.project_id, file_id)
        return FileDeleted(id=file_id)

    container = APIRouter()
    container.include_router(uploads)
    container.include_router(router)
    return container


def platform_required_router() -> APIRouter:
    """For a gateway run without the platform (``--no-auth``): ``/v1/files`` and
    ``/v1/batches`` answer a 404 that says why, instead of a bare "Not Found"."""
    router = APIRouter(include_in_schema=False)

    @router.api_route("/v1/files{rest:path}", methods=["GET", "POST", "DELETE"])
    @router.api_route("/v1/batches{rest:path}", methods=["GET", "POST"])
    async def needs_platform(rest: str) -> Response:
        return error_response(
            OpenAIError(
                "Files and batches need the platform (its database): this gateway runs "
                "with --no-auth. Start `aiforge serve` without --no-auth to use them.",
                status_code=404,
                code="platform_required",
            )
        )

    return router
