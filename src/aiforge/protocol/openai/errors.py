"""OpenAI's error envelope: ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from pydantic import BaseModel


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class OpenAIError(Exception):
    """An error a client sees in OpenAI's envelope, with its HTTP status (and headers, e.g.
    ``Retry-After``). The one error type of every HTTP layer: the gateway, the admin API and
    the replica server raise it, and each app's exception handler renders it.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int = 400,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.type = type
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def envelope(self) -> ErrorResponse:
        return ErrorResponse(
            error=ErrorBody(message=self.message, type=self.type, param=self.param, code=self.code)
        )

    def body(self) -> bytes:
        """The envelope as JSON bytes."""
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


def invalid_param(message: str, param: str, code: str | None = None) -> OpenAIError:
    return OpenAIError(message, status_code=400, param=param, code=code)


def model_not_found(model: str) -> OpenAIError:
    return OpenAIError(
        f"The model `{model}` does not exist.",
        status_code=404,
        param="model",
        code="model_not_found",
    )


def context_length_exceeded(
    *, max_model_len: int, prompt_tokens: int, completion_tokens: int, param: str
) -> OpenAIError:
    where = "messages" if param == "messages" else "prompt"
    total = prompt_tokens + completion_tokens
    return OpenAIError(
        f"This model's maximum context length is {max_model_len} tokens. However, you "
        f"requested {total} tokens ({prompt_tokens} in the {where}, {completion_tokens} in the "
        f"completion). Please reduce the length of the {where} or completion.",
        status_code=400,
        param=param,
        code="context_length_exceeded",
    )


def engine_error(message: str, *, unavailable: bool = False) -> OpenAIError:
    return OpenAIError(
        message,
        status_code=503 if unavailable else 500,
        type="service_unavailable_error" if unavailable else "server_error",
        code="engine_unavailable" if unavailable else "engine_error",
    )
