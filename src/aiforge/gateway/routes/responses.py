"""``/v1/responses``: OpenAI's Responses API, served by translation onto chat completions.

Thin: each route calls one :class:`~aiforge.gateway.responses.ResponsesService` method
(kept on ``app.state.responses``), which authenticates, validates and answers.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from aiforge.gateway.responses.service import ResponsesService
from aiforge.gateway.routes.schema import openapi_body
from aiforge.protocol.openai.responses import CreateResponseRequest

router = APIRouter(tags=["Responses"])


def _service(request: Request) -> ResponsesService:
    service: ResponsesService = request.app.state.responses
    return service


@router.post(
    "/v1/responses",
    summary="Create a model response (OpenAI Responses API)",
    openapi_extra=openapi_body(CreateResponseRequest),
)
async def create_response(request: Request) -> Response:
    return await _service(request).create(request)


@router.get("/v1/responses/{response_id}", summary="Retrieve a stored response")
async def retrieve_response(response_id: str, request: Request) -> Response:
    return await _service(request).retrieve(request, response_id)


@router.delete("/v1/responses/{response_id}", summary="Delete a stored response")
async def delete_response(response_id: str, request: Request) -> Response:
    return await _service(request).delete(request, response_id)


@router.get(
    "/v1/responses/{response_id}/input_items",
    summary="List the input items of a stored response",
)
async def list_input_items(response_id: str, request: Request) -> Response:
    return await _service(request).input_items(request, response_id)
