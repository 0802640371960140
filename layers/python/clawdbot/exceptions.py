"""The root of every clawdbot error.

Errors that can reach a client carry their HTTP status and OpenAI error ``type``/``code`` so one FastAPI
exception handler maps them all to OpenAI's ``{"error": {...}}`` shape.
"""

from __future__ import annotations


class ClawdbotError(Exception):
    """Base error. Subclasses set the class attributes; ``param``/``code`` may be overridden per instance."""

    status_code: int = 500
    error_type: str = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers = headers or {}


class InvalidRequestError(ClawdbotError):
    status_code = 400
    error_type = "invalid_request_error"


class NotFoundError(ClawdbotError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "not_found"


class ConflictError(ClawdbotError):
    status_code = 409
    error_type = "invalid_request_error"
    code = "conflict"


class ServiceUnavailableError(ClawdbotError):
    status_code = 503
    error_type = "server_error"
    code = "service_unavailable"
