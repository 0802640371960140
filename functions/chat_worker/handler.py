"""Lambda entry of the chat worker: SQS FIFO batches of queued turns → Powertools batch processing.

Wiring only (see ``clawdbot.queue.worker``). The worker (store, model, idempotency layer, and the turn observers
that charge tokens and emit metrics) is built once per execution environment at cold start. The event source
mapping must enable ``ReportBatchItemFailures``: the response lists the records to retry, everything else is
deleted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.utilities.batch import process_partial_response

from clawdbot.config.settings import get_settings
from clawdbot.metrics.observability import instrument
from clawdbot.queue.worker import TurnWorker, new_processor
from clawdbot.snapstart import register_hooks

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

processor = new_processor()
worker = TurnWorker.from_settings(get_settings())


def process_batch(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return dict(process_partial_response(event=event, record_handler=worker.record_handler, processor=processor,
                                         context=context))


# Powertools Logger (Lambda context and session id on every line) and Tracer around the invocation, as the API's.
handler = instrument(process_batch)
register_hooks()  # harmless without SnapStart; makes turning it on for the worker safe (clawdbot.snapstart)
