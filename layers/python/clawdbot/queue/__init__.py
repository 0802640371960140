"""Queued chat turns: the API enqueues a turn on an SQS FIFO queue, a worker Lambda runs it exactly once.

Light names only here. The worker (``clawdbot.queue.worker``), the idempotency engines and the status reader are
imported explicitly by whoever needs them, so the API pays for Powertools' idempotency only when a turn route is
used. See ``docs/queue.md``.
"""

from clawdbot.queue.enqueue import TurnQueue
from clawdbot.queue.exceptions import PoisonMessageError, QueueError, TurnInProgressError
from clawdbot.queue.messages import TurnMessage, parse_record

__all__ = ["PoisonMessageError", "QueueError", "TurnInProgressError", "TurnMessage", "TurnQueue", "parse_record"]
