"""OpenAI's Responses API, answered by translation onto chat completions.

``items`` (conversation items, stored and as chat messages), ``translate`` (the chat
request), ``objects`` (the Response object), ``events`` (chat chunks → Responses events, a
pure state machine), ``sse``, ``store`` (the :class:`ResponseStore` port and its in-memory
implementation) and ``service`` (the request path, on ``app.state.responses``).
"""

from aiforge.gateway.responses.service import ResponsesService
from aiforge.gateway.responses.store import (
    InMemoryResponseStore,
    ResponseStore,
    StoredResponse,
)

__all__ = ["InMemoryResponseStore", "ResponseStore", "ResponsesService", "StoredResponse"]
