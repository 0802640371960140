"""The reply target: the turn's outcome published to an SNS topic named in the message.

Why SNS (and not a callback URL): the worker never opens connections to addresses a client chose (no SSRF, no
slow or hostile endpoints holding a worker), delivery retries and fan-out (SQS, Lambda, HTTPS, e-mail
subscriptions) are SNS's job, and permissions are plain IAM (``sns:Publish`` on the allowed topics). Only topics
in ``CLAWDBOT_REPLY_TOPIC_ARNS`` may be named: the API refuses others with 400, and the worker (which may read
messages someone else enqueued) skips them.

Delivery is at least once: a turn redelivered after its reply was published publishes the same outcome again, so
subscribers deduplicate on the turn id (FIFO topics do it themselves: the deduplication id is derived from it).
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from clawdbot.aws_clients import LazyClient
from clawdbot.queue.exceptions import ReplyTargetNotAllowedError
from clawdbot.queue.outcomes import turn_dict

if TYPE_CHECKING:
    from collections.abc import Iterable

    from clawdbot.config.settings import Settings
    from clawdbot.queue.messages import TurnMessage

logger = logging.getLogger(__name__)


def parse_topic_list(value: str) -> frozenset[str]:
    """``CLAWDBOT_REPLY_TOPIC_ARNS``: ARNs separated by commas and/or whitespace."""
    return frozenset(part for part in value.replace(",", " ").split() if part)


class ReplyPublisher:
    """Publishes turn outcomes to allowed SNS topics; the SNS client is created on first publish."""

    def __init__(self, allowed_topics: Iterable[str], client: Any | None = None) -> None:
        self.allowed_topics = frozenset(allowed_topics)
        self._client = LazyClient("sns", client=client)

    @classmethod
    def from_settings(cls, settings: Settings) -> ReplyPublisher:
        return cls(parse_topic_list(settings.reply_topic_arns))

    @property
    def client(self) -> Any:
        return self._client.get()

    def check(self, topic_arn: str) -> None:
        """Raise ``ReplyTargetNotAllowedError`` (400) unless ``topic_arn`` is on the allow-list."""
        if topic_arn not in self.allowed_topics:
            raise ReplyTargetNotAllowedError(
                "reply_topic_arn is not one of this deployment's reply topics (CLAWDBOT_REPLY_TOPIC_ARNS).",
                param="reply_topic_arn")

    def publish(self, message: TurnMessage, outcome: dict[str, Any]) -> bool:
        """Publish ``outcome`` to the message's topic; False (and a warning) if it named none or a foreign one.

        Errors from SNS propagate: the record fails and is retried, and the retry finds the turn done and
        publishes again without running it.
        """
        topic = message.reply_topic_arn
        if topic is None:
            return False
        if topic not in self.allowed_topics:
            logger.warning("turn %s names reply topic %s, which is not allowed; not publishing",
                           message.turn_id, topic)
            return False
        body = turn_dict(message.session_id, message.turn_id, outcome)
        kwargs: dict[str, Any] = {
            "TopicArn": topic,
            "Message": json.dumps(body, ensure_ascii=False, separators=(",", ":")),
            "MessageAttributes": {
                "session_id": {"DataType": "String", "StringValue": message.session_id},
                "turn_id": {"DataType": "String", "StringValue": message.turn_id},
                "status": {"DataType": "String", "StringValue": str(outcome["status"])},
            },
        }
        if topic.endswith(".fifo"):
            kwargs["MessageGroupId"] = message.session_id
            kwargs["MessageDeduplicationId"] = message.deduplication_id()
        self.client.publish(**kwargs)
        logger.debug("published turn %s (%s) to %s", message.turn_id, outcome["status"], topic)
        return True
