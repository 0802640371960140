"""Traffic-control errors. Those that reach HTTP carry their status, so the API's one handler maps them."""

from __future__ import annotations

from clawdbot.exceptions import ClawdbotError, NotFoundError, ServiceUnavailableError


class TrafficError(ClawdbotError):
    """Base of traffic-control errors."""


class AuthenticationError(TrafficError):
    """Missing, malformed, unknown or revoked API key (OpenAI answers these with 401 ``invalid_api_key``)."""

    status_code = 401
    error_type = "invalid_request_error"
    code = "invalid_api_key"


class RateLimitExceededError(TrafficError):
    """A per-key request or token bucket is empty; ``Retry-After`` says when it will not be."""

    status_code = 429
    error_type = "rate_limit_error"
    code = "rate_limit_exceeded"


class QuotaExceededError(RateLimitExceededError):
    """The key's daily token quota is spent (OpenAI's ``insufficient_quota``); it renews at 00:00 UTC."""

    error_type = "insufficient_quota"
    code = "insufficient_quota"


class OverloadedError(ServiceUnavailableError, TrafficError):
    """The server's concurrency cap is reached and the wait queue timed out or is full."""

    code = "server_overloaded"


class KeyNotFoundError(NotFoundError, TrafficError):
    code = "api_key_not_found"


class UnknownVariantError(TrafficError):
    """A client asked (by header) for an A/B variant that the configuration does not declare."""

    status_code = 400
    error_type = "invalid_request_error"
    code = "unknown_variant"
