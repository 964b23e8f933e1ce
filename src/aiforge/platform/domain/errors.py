"""What a platform operation can refuse, independent of HTTP.

The admin API maps each class to OpenAI's error envelope with the matching status
(:mod:`aiforge.platform.api.errors`); the CLI shows the message.
"""

from __future__ import annotations


class PlatformError(Exception):
    """Base class: ``message`` is safe to show to the caller; ``param`` names the field."""

    code = "platform_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class NotFound(PlatformError):
    """The resource does not exist, or the caller may not know it exists."""

    code = "not_found"


class Forbidden(PlatformError):
    """The caller may see the resource but not do this to it (its role is too low)."""

    code = "insufficient_permissions"


class Conflict(PlatformError):
    """The change would clash with an existing resource (a duplicate name)."""

    code = "conflict"


class InvalidRequest(PlatformError):
    """The request is well-formed but asks for something impossible."""

    code = "invalid_request"
