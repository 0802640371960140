"""Session store errors."""

from __future__ import annotations

from clawdbot.exceptions import ClawdbotError, ConflictError, NotFoundError, ServiceUnavailableError


class SessionError(ClawdbotError):
    """Base of session-store errors."""


class SessionNotFoundError(NotFoundError, SessionError):
    code = "session_not_found"


class SessionExistsError(ConflictError, SessionError):
    code = "session_exists"


class AppendConflictError(ConflictError, SessionError):
    """Optimistic append lost the race too many times (the caller may retry the whole turn)."""

    code = "append_conflict"


class StoreUnavailableError(ServiceUnavailableError, SessionError):
    """The backing store cannot be reached or is throttling."""

    code = "store_unavailable"


class SessionListingUnsupportedError(SessionError):
    """The engine keeps no index of sessions by owner, and listing would mean scanning every session."""

    status_code = 501
    error_type = "invalid_request_error"
    code = "session_listing_unsupported"
