"""The SQS message that asks the worker for one chat turn, and how a record's body becomes one.

The turn travels as versioned JSON in the message body (not in message attributes): the body is what FIFO
deduplication, DLQ redrive and the Lambda event all carry unchanged, and pydantic validates it in one place.
Unknown fields are ignored, so a newer producer never poisons an older worker in the middle of a deploy.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from clawdbot.queue.exceptions import PoisonMessageError

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

#: What a turn id may look like: a client may choose one (to retry ``POST`` safely), so it is kept URL- and
#: log-safe. Ids we generate (``chatcmpl-`` + 24 hex digits) match it.
TURN_ID_PATTERN = r"^[A-Za-z0-9._:\-]{1,64}$"
#: Session ids as the session store accepts them.
SESSION_ID_PATTERN = r"^[A-Za-z0-9._:@\-]{1,128}$"
#: SQS's classic message size limit. Queues may now allow more, but 256 KiB is accepted by every queue.
MAX_MESSAGE_BYTES = 256 * 1024


class TurnSampling(BaseModel):
    """How a queued turn's reply is generated, as a chat completion asks for it (each optional: unset, the server's
    default). Shared by the API's request and the message, so the two cannot disagree on a bound."""

    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    seed: int | None = None
    stop: Annotated[tuple[Annotated[str, Field(min_length=1)], ...], Field(min_length=1, max_length=4)] | None = None


class TurnMessage(TurnSampling):
    """One queued chat turn: ``content`` is the user's new message in session ``session_id``; the sampling fields
    (``TurnSampling``) travel only when set."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    v: Literal[1] = 1
    session_id: str = Field(pattern=SESSION_ID_PATTERN)
    #: Names the turn everywhere: the idempotency key, the transcript entries' ``turn_id``, the completion id.
    turn_id: str = Field(pattern=TURN_ID_PATTERN)
    content: str = Field(min_length=1)
    #: The API key id that enqueued it; the worker acts as that caller (session ownership is checked again).
    owner: str | None = None
    #: Where to publish the outcome (an SNS topic ARN from ``CLAWDBOT_REPLY_TOPIC_ARNS``), if anywhere.
    reply_topic_arn: str | None = None
    #: Unix time the API accepted the turn.
    enqueued_at: int

    def to_body(self) -> str:
        return self.model_dump_json(exclude_none=True)

    def deduplication_id(self) -> str:
        """The FIFO ``MessageDeduplicationId``.

        A hash of owner, session and turn id rather than the bare turn id: FIFO deduplication is queue-wide, so a
        client-chosen turn id reused in another session must not make SQS silently drop that session's turn.
        """
        return turn_digest(self.owner, self.session_id, self.turn_id)


def turn_digest(owner: str | None, session_id: str, turn_id: str) -> str:
    return hashlib.sha256(f"{owner or ''}\x00{session_id}\x00{turn_id}".encode()).hexdigest()


def parse_record(record: SQSRecord) -> TurnMessage:
    """The turn a record carries; ``PoisonMessageError`` if the body is not one.

    On a FIFO queue the message group must be the session: that is what keeps one turn per session in flight, so
    a message grouped otherwise is refused rather than processed out of order with its session's other turns.
    """
    try:
        message = TurnMessage.model_validate_json(record.body)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()[:3])
        raise PoisonMessageError(f"message {record.message_id} is not a chat turn ({problems})") from exc
    group = record.attributes.message_group_id
    if group is not None and group != message.session_id:
        raise PoisonMessageError(
            f"message {record.message_id} is in message group {group!r}, not its session {message.session_id!r}")
    return message
