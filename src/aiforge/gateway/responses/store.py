"""Where stored Responses live: the :class:`ResponseStore` port the gateway owns.

A Response created with ``store: true`` (the default) is kept so that ``GET
/v1/responses/{id}``, ``…/input_items`` and ``previous_response_id`` can read it later.
Every method takes the caller's project id, and a store never returns a row of another
project: the routes answer "not found" alike for a response that never existed, one that was
deleted and one of another project, so nobody learns that another project's id exists.

The platform implements the port in SQL (:mod:`aiforge.platform.responses`);
:class:`InMemoryResponseStore` serves a gateway run without the platform (``--no-auth``),
bounded to its most recent :data:`DEFAULT_MEMORY_CAPACITY` responses.
"""

from __future__ import annotations

import asyncio
import copy
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

DEFAULT_MEMORY_CAPACITY = 1000


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """One stored Response and the conversation it continued."""

    id: str
    project_id: str
    model: str
    status: str
    previous_response_id: str | None
    response: dict[str, Any]
    """The Response object, as the API returned it."""
    input_items: list[dict[str, Any]]
    """What the model read, oldest first: the stored conversation of
    ``previous_response_id`` (its input items and output) and this request's input, each
    item with its id, in the shapes ``…/input_items`` lists."""
    created_at: datetime

    def conversation(self) -> list[dict[str, Any]]:
        """The items a request continuing this response starts from: its input, then its
        output (``instructions`` are not carried over, as in OpenAI's API)."""
        output: list[dict[str, Any]] = self.response.get("output", [])
        return [*self.input_items, *output]


class ResponseStore(Protocol):
    """Stored Responses, per project. Methods may do I/O but never block the event loop."""

    async def put(self, record: StoredResponse) -> None:
        """Store ``record`` (a new id; a store may refuse to overwrite)."""

    async def get(self, project_id: str, response_id: str) -> StoredResponse | None:
        """The response ``response_id`` of ``project_id``; None if it is not there."""

    async def delete(self, project_id: str, response_id: str) -> bool:
        """Delete it; False if ``project_id`` had no such response."""


class InMemoryResponseStore:
    """A :class:`ResponseStore` in this process's memory, keeping the most recent
    ``capacity`` responses (older ones are forgotten, as if deleted). Records are copied in
    and out, so callers never share mutable state with the store."""

    def __init__(self, capacity: int = DEFAULT_MEMORY_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._records: OrderedDict[tuple[str, str], StoredResponse] = OrderedDict()
        self._lock = asyncio.Lock()

    async def put(self, record: StoredResponse) -> None:
        async with self._lock:
            self._records[(record.project_id, record.id)] = copy.deepcopy(record)
            while len(self._records) > self.capacity:
                self._records.popitem(last=False)

    async def get(self, project_id: str, response_id: str) -> StoredResponse | None:
        record = self._records.get((project_id, response_id))
        return None if record is None else copy.deepcopy(record)

    async def delete(self, project_id: str, response_id: str) -> bool:
        async with self._lock:
            return self._records.pop((project_id, response_id), None) is not None

    def __len__(self) -> int:
        return len(self._records)
