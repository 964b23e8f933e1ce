"""The Responses API over the gateway's request path: one :class:`ResponsesService` per app.

A ``POST /v1/responses`` is authenticated, parsed (:mod:`aiforge.protocol.openai.responses`),
joined to the stored conversation of its ``previous_response_id`` (of the caller's project
only), translated to a chat completion (:mod:`.translate`) and run through
:meth:`OpenAIHandler.submit` — the same admission, routing, failover and metering as a chat
request, with exactly one usage record under the request's id. The answer comes back as a
Response object, or for ``stream: true`` as the Responses event stream (:mod:`.events`).
A finished response (completed, incomplete or failed) with ``store: true`` is then kept in
the :class:`ResponseStore`; a stream the client leaves is not stored.

``GET``/``DELETE /v1/responses/{id}`` and ``GET …/input_items`` read the store, scoped to the
caller's project: another project's response is "not found", exactly like a missing one.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from aiforge.gateway.handler import InternalRequest, OpenAIHandler
from aiforge.gateway.relay import RelayResponse, client_left
from aiforge.gateway.request import check_content_type, read_body
from aiforge.gateway.request_id import scope_request_id
from aiforge.gateway.responses.events import ResponseStream, response_from_answer
from aiforge.gateway.responses.items import IdFactory, Item, new_item_id, stored_items
from aiforge.gateway.responses.objects import ResponseFrame
from aiforge.gateway.responses.sse import DONE, SseReader, encode_events
from aiforge.gateway.responses.store import ResponseStore, StoredResponse
from aiforge.gateway.responses.translate import chat_body
from aiforge.protocol.openai.errors import OpenAIError, invalid_param
from aiforge.protocol.openai.responses import CreateResponseRequest, parse_create_request
from aiforge.types import Principal

log = logging.getLogger(__name__)

MAX_CONVERSATION_BYTES = 16 * 1024 * 1024
"""The most a stored conversation may grow to (its items as JSON); a longer chain is refused
with a 400 asking for a new conversation, so one row never grows without bound."""
DEFAULT_PAGE = 20
MAX_PAGE = 100
CHAT_PATH = "/v1/chat/completions"


@dataclass(frozen=True, slots=True)
class Turn:
    """One request, planned: its frame, what the model reads, and the chat request."""

    frame: ResponseFrame
    items: list[Item]
    chat: dict[str, Any]


def response_not_found(response_id: str, *, param: str | None = None) -> OpenAIError:
    what = "Previous response" if param else "Response"
    return OpenAIError(
        f"{what} with id {response_id!r} not found.",
        status_code=404,
        param=param,
        code="previous_response_not_found" if param else "response_not_found",
    )


class ResponsesService:
    """Serves ``/v1/responses`` for one gateway app (kept on ``app.state.responses``)."""

    def __init__(
        self,
        handler: OpenAIHandler,
        store: ResponseStore,
        *,
        new_id: IdFactory = new_item_id,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.handler = handler
        self.store = store
        self._new_id = new_id
        self._clock = clock

    # -- create ------------------------------------------------------------------------
    async def create(self, request: Request) -> Response:
        principal = self.handler.authenticate(request)
        check_content_type(request.headers.get("content-type"))
        body = await read_body(request, self.handler.settings.max_body_bytes)
        turn = await self.plan(principal, parse_create_request(body))
        internal = InternalRequest(
            principal=principal,
            kind="chat",
            path=CHAT_PATH,
            body=orjson.dumps(turn.chat),
            request_id=scope_request_id(request.scope),
            headers=dict(request.headers),
        )
        left = functools.partial(client_left, request.receive)
        answer = await self.handler.submit(internal, client_left=left)
        if isinstance(answer, RelayResponse):
            return StreamingResponse(
                self._relay_events(answer, principal, turn),
                media_type="text/event-stream",
                headers={"cache-control": "no-cache"},
            )
        if answer.status_code != 200:
            return answer  # an error envelope from the replica or the gateway
        stream = ResponseStream(turn.frame, new_id=self._new_id, clock=self._clock)
        response = response_from_answer(stream, orjson.loads(bytes(answer.body)))
        await self._keep(principal, turn, response)
        return _json(response)

    async def plan(self, principal: Principal, request: CreateResponseRequest) -> Turn:
        """The turn ``request`` makes for ``principal``: the stored conversation it
        continues (404 when ``previous_response_id`` is not one of the project's), then its
        own input, and the chat request over both."""
        conversation: list[Item] = []
        if request.previous_response_id is not None:
            previous = await self.store.get(principal.project_id, request.previous_response_id)
            if previous is None:
                raise response_not_found(request.previous_response_id, param="previous_response_id")
            conversation = previous.conversation()
        items = [*conversation, *stored_items(request.input_items(), self._new_id)]
        if len(orjson.dumps(items)) > MAX_CONVERSATION_BYTES:
            raise invalid_param(
                "The conversation is too long to continue "
                f"(over {MAX_CONVERSATION_BYTES // 2**20} MiB); start a new one.",
                "previous_response_id",
                code="conversation_too_long",
            )
        frame = ResponseFrame(
            id=self._new_id("resp"), created_at=int(self._clock()), request=request
        )
        return Turn(frame=frame, items=items, chat=chat_body(request, items))

    async def _relay_events(
        self, relay: RelayResponse, principal: Principal, turn: Turn
    ) -> AsyncIterator[bytes]:
        """The Responses events of a relayed chat stream; the relay is always closed (which
        records the request's usage), and a finished response is stored."""
        stream = ResponseStream(turn.frame, new_id=self._new_id, clock=self._clock)
        try:
            yield encode_events(stream.start())
            async with contextlib.aclosing(_chat_chunks(relay)) as chunks:
                async for chunk in chunks:
                    error = chunk.get("error")
                    if error is not None:
                        yield encode_events(stream.fail(_error_message(error)))
                        break
                    yield encode_events(stream.feed(chunk))
                else:
                    yield encode_events(stream.finish())
            assert stream.final is not None
            await self._keep(principal, turn, stream.final)
        finally:
            await relay.aclose()

    async def _keep(self, principal: Principal, turn: Turn, response: dict[str, Any]) -> None:
        """Store a finished response when the request asked for it. A store that fails is
        logged, not raised: the answer was made and metered, and the client gets it."""
        request = turn.frame.request
        if not request.store:
            return
        record = StoredResponse(
            id=turn.frame.id,
            project_id=principal.project_id,
            model=request.model,
            status=str(response["status"]),
            previous_response_id=request.previous_response_id,
            response=response,
            input_items=turn.items,
            created_at=datetime.fromtimestamp(turn.frame.created_at, UTC),
        )
        try:
            await self.store.put(record)
        except Exception:
            log.exception("could not store response %s", turn.frame.id)

    # -- stored responses ------------------------------------------------------------
    async def retrieve(self, request: Request, response_id: str) -> Response:
        record = await self._stored(request, response_id)
        if request.query_params.get("stream") in ("true", "1"):
            raise invalid_param(
                "Streaming a stored response again is not supported; retrieve it whole.",
                "stream",
                code="unsupported_parameter",
            )
        return _json(record.response)

    async def delete(self, request: Request, response_id: str) -> Response:
        principal = self.handler.authenticate(request)
        if not await self.store.delete(principal.project_id, response_id):
            raise response_not_found(response_id)
        return _json({"id": response_id, "object": "response", "deleted": True})

    async def input_items(self, request: Request, response_id: str) -> Response:
        record = await self._stored(request, response_id)
        query = request.query_params
        page = item_page(
            record.input_items,
            after=query.get("after"),
            limit=_limit(query.get("limit")),
            order=_order(query.get("order")),
        )
        return _json(page)

    async def _stored(self, request: Request, response_id: str) -> StoredResponse:
        principal = self.handler.authenticate(request)
        record = await self.store.get(principal.project_id, response_id)
        if record is None:
            raise response_not_found(response_id)
        return record


async def _chat_chunks(relay: RelayResponse) -> AsyncGenerator[Mapping[str, Any]]:
    """The chat chunks of a relayed stream, parsed; an event that is not a JSON object ends
    the stream as an error."""
    reader = SseReader()
    async for raw in relay.body_iterator:
        data = raw if isinstance(raw, bytes) else str(raw).encode()
        for event in reader.feed(bytes(data)):
            if event == DONE:
                continue
            yield _parsed(event)
    for event in reader.flush():
        if event != DONE:
            yield _parsed(event)


def _parsed(event: str) -> Mapping[str, Any]:
    try:
        chunk = orjson.loads(event)
    except orjson.JSONDecodeError:
        chunk = None
    if not isinstance(chunk, dict):
        return {"error": {"message": "The replica sent an event that is not a chat chunk."}}
    return chunk


def _error_message(error: Any) -> str:
    message = error.get("message") if isinstance(error, Mapping) else None
    return message if isinstance(message, str) and message else "The answer failed mid-way."


def item_page(items: list[Item], *, after: str | None, limit: int, order: str) -> dict[str, Any]:
    """One page of ``items`` as OpenAI lists them: ``order`` ``desc`` (newest first, the
    default) or ``asc``, starting after the item with id ``after``."""
    ordered = list(reversed(items)) if order == "desc" else list(items)
    if after is not None:
        ids = [item.get("id") for item in ordered]
        if after not in ids:
            raise invalid_param(f"No input item with id {after!r} in this response.", "after")
        ordered = ordered[ids.index(after) + 1 :]
    data = ordered[:limit]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": len(ordered) > limit,
    }


def _limit(value: str | None) -> int:
    if value is None:
        return DEFAULT_PAGE
    try:
        limit = int(value)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_PAGE:
        raise invalid_param(f"limit must be an integer from 1 to {MAX_PAGE}.", "limit")
    return limit


def _order(value: str | None) -> str:
    if value is None:
        return "desc"
    if value not in ("asc", "desc"):
        raise invalid_param("order must be `asc` or `desc`.", "order")
    return value


def _json(body: Mapping[str, Any]) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")
