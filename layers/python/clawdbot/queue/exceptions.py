"""Errors of queued chat turns: one hierarchy under ``QueueError``.

Errors raised by the API routes carry their HTTP status (the app maps them to OpenAI's error JSON). Errors raised
in the worker decide a record's fate: anything that escapes the record handler lands the record in
``batchItemFailures`` (SQS redelivers it, and after the queue's ``maxReceiveCount`` moves it to the DLQ).
"""

from __future__ import annotations

from clawdbot.exceptions import ClawdbotError, InvalidRequestError, ServiceUnavailableError


class QueueError(ClawdbotError):
    """Base of queued-turn errors."""


class PoisonMessageError(QueueError):
    """A record whose body is not a turn message we can read: no retry will fix it, so it goes to the DLQ."""

    code = "poison_message"


class TurnInProgressError(QueueError):
    """Another worker holds this turn right now (its in-progress lock has not expired): retry later."""

    status_code = 409
    code = "turn_in_progress"


class TurnDeferredError(QueueError, ServiceUnavailableError):
    """The worker's invocation has too little time left to run one more turn: the record is handed back unstarted
    (SQS delivers it again) instead of being cut off by the Lambda timeout together with the rest of its batch."""

    code = "turn_deferred"


class QueueNotConfiguredError(QueueError, ServiceUnavailableError):
    code = "queue_not_configured"


class QueueUnavailableError(QueueError, ServiceUnavailableError):
    """SQS refused or could not be reached; nothing was enqueued."""

    code = "queue_unavailable"


class TurnStatusUnavailableError(QueueError, ServiceUnavailableError):
    """The idempotency store (where turn outcomes live) could not be read."""

    code = "turn_status_unavailable"


class TurnTooLargeError(QueueError, InvalidRequestError):
    code = "turn_too_large"


class ReplyTargetNotAllowedError(QueueError, InvalidRequestError):
    code = "reply_target_not_allowed"


class TurnRetriesExhaustedError(QueueError, ServiceUnavailableError):
    """A turn failed for a passing reason on its last delivery: it is stored ``failed`` and its record is parked
    in the DLQ. Resending it takes a new turn id (the old one answers ``failed`` until its record expires)."""

    code = "turn_retries_exhausted"
