"""Inference errors; each carries the HTTP status the API answers with."""

from __future__ import annotations

from clawdbot.exceptions import ClawdbotError, InvalidRequestError


class InferenceError(ClawdbotError):
    """The model backend failed (bad model folder, runtime error)."""

    status_code = 500
    error_type = "server_error"
    code = "inference_error"


class ModelLoadError(InferenceError):
    """A model folder does not follow the expected layout; the message names what is missing."""

    code = "model_load_error"


class ContextLengthExceededError(InvalidRequestError):
    """The prompt (plus the requested completion) cannot fit the model's context window."""

    code = "context_length_exceeded"


class UpstreamError(InferenceError):
    """A remote model endpoint returned an error (mapped to 502)."""

    status_code = 502
    code = "upstream_error"


class UpstreamTimeoutError(InferenceError):
    status_code = 504
    code = "upstream_timeout"


class UpstreamThrottledError(InferenceError):
    status_code = 429
    error_type = "rate_limit_error"
    code = "upstream_throttled"


class GenerationCancelledError(InferenceError):
    """The caller hung up before the answer was made, so the model stopped (``clawdbot.inference.cancellation``).

    Nobody reads the response; its status, nginx's 499 "client closed request", is for the logs and the metrics
    (``Requests`` and ``Errors`` by status), where a rise means clients give up waiting."""

    status_code = 499
    error_type = "invalid_request_error"
    code = "client_closed_request"
