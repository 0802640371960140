"""The asynchronous path: a FIFO queue of chat turns, its dead-letter queue, and the worker that drains it.

FIFO keeps the turns of one conversation (one message group) in order. The visibility timeout is six times the
worker's timeout, as Lambda's SQS guidance asks, so a slow batch is not handed to a second worker while the first
still runs. After three failed receives a message parks in the DLQ, and any message there raises an alarm: a
turn that never got an answer is a user left waiting.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_sqs as sqs
from aws_cdk.aws_lambda_event_sources import SqsEventSource
from constructs import Construct

from cdk.config import TURN_BUDGET_SECONDS, WORKER_MODEL_ATTEMPTS, WORKER_MODEL_READ_TIMEOUT_SECONDS

if TYPE_CHECKING:
    from aws_cdk import aws_kms as kms

    from cdk.config import WorkerQuota
    from cdk.functions import PythonFunction

MAX_RECEIVE_COUNT = 3
VISIBILITY_FACTOR = 6


class ChatQueue(Construct):
    """``queue`` + ``dead_letter_queue`` (FIFO, KMS, TLS-only) and ``dlq_alarm``; ``attach`` wires the worker."""

    def __init__(self, scope: Construct, construct_id: str, *, key: kms.IKey, worker_timeout_seconds: int) -> None:
        super().__init__(scope, construct_id)
        self.dead_letter_queue = sqs.Queue(
            self, "DeadLetters",
            fifo=True,
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=key,
            enforce_ssl=True,
            retention_period=Duration.days(14),
        )
        self.queue = sqs.Queue(
            self, "Turns",
            fifo=True,
            content_based_deduplication=True,
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=key,
            data_key_reuse=Duration.minutes(5),
            enforce_ssl=True,
            visibility_timeout=Duration.seconds(VISIBILITY_FACTOR * worker_timeout_seconds),
            retention_period=Duration.days(4),
            dead_letter_queue=sqs.DeadLetterQueue(queue=self.dead_letter_queue, max_receive_count=MAX_RECEIVE_COUNT),
        )
        self.dlq_alarm = cloudwatch.Alarm(
            self, "DeadLetterAlarm",
            alarm_description="Chat turns failed 3 times and were parked in the dead-letter queue",
            metric=self.dead_letter_queue.metric_approximate_number_of_messages_visible(
                period=Duration.minutes(1), statistic="Maximum"),
            threshold=0,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )

    def attach(self, worker: PythonFunction, quota: WorkerQuota) -> None:
        """Let ``worker`` consume batches, reporting failed items so one bad turn does not retry the batch. The
        event source invokes ``invoke_target``: the live (SnapStart) alias when the worker has one."""
        worker.invoke_target.add_event_source(SqsEventSource(
            self.queue,
            batch_size=quota.batch_size,
            report_batch_item_failures=True,
            max_concurrency=quota.max_concurrency,
        ))

    @staticmethod
    def worker_environment() -> dict[str, str]:
        """The worker's own settings: its model calls' read timeout and attempts, and so how long a turn may take
        (``CLAWDBOT_QUEUE_TURN_BUDGET_SECONDS``, ``cdk.config.TURN_BUDGET_SECONDS``): the worker starts no further
        record of a batch with less than that left, so a slow batch hands its unstarted turns back (visible again
        at once) instead of hitting the Lambda timeout (a function error, an alarm, and every record of the batch
        redelivered, finished ones too)."""
        return {"CLAWDBOT_SAGEMAKER_READ_TIMEOUT": str(WORKER_MODEL_READ_TIMEOUT_SECONDS),
                "CLAWDBOT_SAGEMAKER_MAX_ATTEMPTS": str(WORKER_MODEL_ATTEMPTS),
                "CLAWDBOT_QUEUE_TURN_BUDGET_SECONDS": str(TURN_BUDGET_SECONDS)}

    def environment(self) -> dict[str, str]:
        """The queue for the API; its redrive limit for the worker, which gives a turn up on that delivery (stored
        ``failed`` before it is dead-lettered, so clients stop polling ``pending``)."""
        return {"CLAWDBOT_QUEUE_URL": self.queue.queue_url,
                "CLAWDBOT_QUEUE_MAX_RECEIVE_COUNT": str(MAX_RECEIVE_COUNT)}
