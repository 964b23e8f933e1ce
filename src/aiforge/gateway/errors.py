"""OpenAI's error envelope, for every error the gateway itself produces.

Errors from a replica are passed through unchanged; these are the ones the gateway decides:
authentication, limits, unknown models, malformed or oversized bodies, no replica.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response

from aiforge.protocol.openai.errors import OpenAIError
from aiforge.types import LimitExceeded


def error_response(error: OpenAIError) -> Response:
    """``error`` as an HTTP response: OpenAI's envelope, its status and headers."""
    return Response(
        error.body(),
        status_code=error.status_code,
        media_type="application/json",
        headers=error.headers,
    )


def model_not_found(model: str) -> OpenAIError:
    return OpenAIError(
        f"The model `{model}` does not exist or is not served here.",
        status_code=404,
        param="model",
        code="model_not_found",
    )


def no_replica(model: str, detail: str = "") -> OpenAIError:
    suffix = f" ({detail})" if detail else ""
    return OpenAIError(
        f"No replica of `{model}` is available right now{suffix}.",
        status_code=503,
        type="service_unavailable_error",
        code="engine_unavailable",
    )


def rate_limited(exc: LimitExceeded) -> OpenAIError:
    """A 429 shaped like OpenAI's: ``type`` is ``tokens`` for a token limit (per minute, day
    or month) and ``requests`` for the others (requests per minute, concurrency); the
    limit's name (e.g. ``key.tokens_per_day``) is in the message and the
    ``x-ratelimit-limit-name`` header, the wait in ``Retry-After`` (whole seconds, >= 1)."""
    retry_after = max(1, int(exc.retry_after_s + 0.999))
    dimension = exc.limit_name.rpartition(".")[2]
    return OpenAIError(
        f"{exc.message} (limit: {exc.limit_name})",
        status_code=429,
        type="tokens" if dimension.startswith("tokens_") else "requests",
        code="rate_limit_exceeded",
        headers={"retry-after": str(retry_after), "x-ratelimit-limit-name": exc.limit_name},
    )


def shutting_down() -> OpenAIError:
    """The gateway is stopping: a request it will not start, or one it ended at the deadline."""
    return OpenAIError(
        "The server is shutting down; the request was not completed. Please retry.",
        status_code=503,
        type="service_unavailable_error",
        code="shutting_down",
    )


def limits_unavailable() -> OpenAIError:
    """The limits store cannot be reached, so the request cannot be admitted (fail closed)."""
    return OpenAIError(
        "The rate-limit store is unavailable, so the request cannot be admitted right now. "
        "Please retry shortly.",
        status_code=503,
        type="server_error",
        code="limits_unavailable",
    )


async def openai_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, OpenAIError)
    return error_response(exc)
