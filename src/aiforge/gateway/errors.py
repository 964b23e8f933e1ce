"""OpenAI's error envelope, for every error the gateway itself produces.

Errors from a replica are passed through unchanged; these are the ones the gateway decides:
authentication, limits, unknown models, malformed or oversized bodies, no replica.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from fastapi import Request
from fastapi.responses import Response

from aiforge.types import LimitExceeded


class GatewayError(Exception):
    """An error answered with OpenAI's envelope ``{"error": {message, type, param, code}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def body(self) -> bytes:
        return orjson.dumps(
            {
                "error": {
                    "message": self.message,
                    "type": self.type,
                    "param": self.param,
                    "code": self.code,
                }
            }
        )

    def response(self) -> Response:
        return Response(
            self.body(),
            status_code=self.status,
            media_type="application/json",
            headers=self.headers,
        )


def model_not_found(model: str) -> GatewayError:
    return GatewayError(
        404,
        f"The model `{model}` does not exist or is not served here.",
        param="model",
        code="model_not_found",
    )


def no_replica(model: str, detail: str = "") -> GatewayError:
    suffix = f" ({detail})" if detail else ""
    return GatewayError(
        503,
        f"No replica of `{model}` is available right now{suffix}.",
        type="service_unavailable_error",
        code="engine_unavailable",
    )


def rate_limited(exc: LimitExceeded) -> GatewayError:
    """A 429 shaped like OpenAI's: ``type`` is ``tokens`` for a token limit (per minute, day
    or month) and ``requests`` for the others (requests per minute, concurrency); the
    limit's name (e.g. ``key.tokens_per_day``) is in the message and the
    ``x-ratelimit-limit-name`` header, the wait in ``Retry-After`` (whole seconds, >= 1)."""
    retry_after = max(1, int(exc.retry_after_s + 0.999))
    dimension = exc.limit_name.rpartition(".")[2]
    return GatewayError(
        429,
        f"{exc.message} (limit: {exc.limit_name})",
        type="tokens" if dimension.startswith("tokens_") else "requests",
        code="rate_limit_exceeded",
        headers={"retry-after": str(retry_after), "x-ratelimit-limit-name": exc.limit_name},
    )


def limits_unavailable() -> GatewayError:
    """The limits store cannot be reached, so the request cannot be admitted (fail closed)."""
    return GatewayError(
        503,
        "The rate-limit store is unavailable, so the request cannot be admitted right now. "
        "Please retry shortly.",
        type="server_error",
        code="limits_unavailable",
    )


async def gateway_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return exc.response()
