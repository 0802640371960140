"""The producer side: put a turn on the queue.

On a FIFO queue (URL ending in ``.fifo``, the intended setup) the message group is the session, so SQS hands a
session's turns to workers one at a time and in order, and the deduplication id is derived from the turn id, so a
client retrying ``POST`` with the same ``turn_id`` within SQS's five-minute window enqueues nothing new. On a
standard queue both are left out: turns still run exactly once (idempotency), but a session's turns may overlap.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from clawdbot.aws_clients import LazyClient
from clawdbot.queue.exceptions import QueueUnavailableError, TurnTooLargeError
from clawdbot.queue.messages import MAX_MESSAGE_BYTES

if TYPE_CHECKING:
    from clawdbot.queue.messages import TurnMessage

logger = logging.getLogger(__name__)


class TurnQueue:
    """Sends turn messages to one queue. The SQS client is created on first send and then reused."""

    def __init__(self, queue_url: str, client: Any | None = None) -> None:
        self.queue_url = queue_url
        self.fifo = queue_url.endswith(".fifo")
        self._client = LazyClient("sqs", client=client)

    @property
    def client(self) -> Any:
        return self._client.get()

    def send(self, message: TurnMessage) -> str:
        """Enqueue ``message``; returns SQS's message id.

        Raises ``TurnTooLargeError`` (400) for a body over :data:`MAX_MESSAGE_BYTES` and ``QueueUnavailableError``
        (503) when SQS cannot be reached or refuses the message.
        """
        body = message.to_body()
        size = len(body.encode())
        if size > MAX_MESSAGE_BYTES:
            raise TurnTooLargeError(
                f"The turn is {size} bytes once queued; the limit is {MAX_MESSAGE_BYTES}. Send a shorter message.",
                param="content")
        kwargs: dict[str, Any] = {"QueueUrl": self.queue_url, "MessageBody": body}
        if self.fifo:
            kwargs["MessageGroupId"] = message.session_id
            kwargs["MessageDeduplicationId"] = message.deduplication_id()
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self.client.send_message(**kwargs)
        except (BotoCoreError, ClientError) as exc:
            logger.warning("could not enqueue turn %s: %s", message.turn_id, exc)
            raise QueueUnavailableError("The turn could not be queued; try again.") from exc
        logger.debug("enqueued turn %s of session %s as %s", message.turn_id, message.session_id,
                     response.get("MessageId"))
        return str(response["MessageId"])
