"""A local stand-in for Lambda's SQS event source mapping: receive, build the Lambda event, invoke, delete.

On AWS the event source mapping long-polls the queue, hands the worker Lambda batches in the documented SQS event
shape and deletes what the handler did not report in ``batchItemFailures``; failed messages stay in flight until
their visibility timeout and come back (or go to the DLQ). This module does the same against any SQS endpoint
(moto, ElasticMQ, AWS itself), so the worker handler runs unchanged on one machine and in the end-to-end tests.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

logger = logging.getLogger(__name__)


@dataclass
class DrainStats:
    batches: int = 0
    received: int = 0
    deleted: int = 0
    failed: int = 0


def lambda_record(message: dict[str, Any], queue_arn: str) -> dict[str, Any]:
    """One ``ReceiveMessage`` result as the Lambda SQS event record the mapping would deliver."""
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": dict(message.get("Attributes", {})),
        "messageAttributes": {
            name: {"stringValue": value.get("StringValue"), "binaryValue": value.get("BinaryValue"),
                   "stringListValues": [], "binaryListValues": [], "dataType": value["DataType"]}
            for name, value in message.get("MessageAttributes", {}).items()
        },
        "md5OfBody": message["MD5OfBody"],
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": queue_arn.split(":")[3],
    }


def drain(client: Any, queue_url: str, handler: Callable[[dict[str, Any], Any], Any],
          context_factory: Callable[[], Any], *, batch_size: int = 10, wait_seconds: int = 0,
          max_batches: int | None = None) -> DrainStats:
    """Feed ``handler`` batches until the queue has nothing visible (or ``max_batches`` were handled).

    A handler that raises fails its whole batch, as on Lambda. Failed messages are left for their visibility
    timeout to expire, so a poison message is not spun on here either.
    """
    queue_arn = client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    stats = DrainStats()
    while max_batches is None or stats.batches < max_batches:
        messages = client.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=batch_size, WaitTimeSeconds=wait_seconds,
            MessageSystemAttributeNames=["All"], MessageAttributeNames=["All"]).get("Messages", [])
        if not messages:
            break
        stats.batches += 1
        stats.received += len(messages)
        event = {"Records": [lambda_record(m, queue_arn) for m in messages]}
        try:
            response = handler(event, context_factory()) or {}
            failed = {item["itemIdentifier"] for item in response.get("batchItemFailures", [])}
        except Exception:
            logger.warning("the handler failed a whole batch of %d", len(messages), exc_info=True)
            failed = {m["MessageId"] for m in messages}
        done = [m for m in messages if m["MessageId"] not in failed]
        stats.failed += len(messages) - len(done)
        for start in range(0, len(done), 10):
            chunk = done[start:start + 10]
            client.delete_message_batch(QueueUrl=queue_url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)])
        stats.deleted += len(done)
        logger.debug("batch of %d: %d deleted, %d left to retry", len(messages), len(done), len(messages) - len(done))
    return stats
