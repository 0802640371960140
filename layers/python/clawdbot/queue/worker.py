"""The SQS worker's record handler: one message, one chat turn, at most once per turn id.

The Lambda (``functions/chat_worker/handler.py``) feeds each batch to Powertools' ``SqsFifoPartialProcessor``
with :meth:`TurnWorker.record_handler`. What happens to a record:

* its body is not a turn (``PoisonMessageError``), or a transient error escapes (model or store unavailable,
  throttling, another worker holding the turn): the record fails and lands in ``batchItemFailures``; SQS
  redelivers it, and after ``maxReceiveCount`` moves it to the DLQ. With ``skip_group_on_error`` only the rest of
  *that session's* records in the batch fail with it (FIFO order within a session is kept); other sessions'
  records succeed. On the last delivery (the queue's ``maxReceiveCount``, ``CLAWDBOT_QUEUE_MAX_RECEIVE_COUNT``)
  a turn that fails again is first stored as ``failed`` (``turn_retries_exhausted``), so its client stops
  reading ``pending``, and then still fails into the DLQ;
* the turn can never succeed (unknown session, prompt too long: a 4xx ``ClawdbotError``): the failure is stored
  as the turn's outcome and the record succeeds, so it is not retried and the client reads ``failed``;
* too little of the invocation is left to run one more turn (``CLAWDBOT_QUEUE_TURN_BUDGET_SECONDS``; never the
  invocation's first record, nor one on its last delivery): the record fails unstarted (``TurnDeferredError``)
  and is made visible again at once, rather than the Lambda timeout cutting it off and sending back the whole
  batch after the visibility timeout;
* otherwise the turn runs through ``ChatService`` (the same code as ``POST /v1/chat/completions``), which appends
  the user message and the reply together, tagged with the turn id; the chat service's observers then charge
  the turn's tokens to the caller's rate limits and record its metrics, as the API's do (:func:`turn_observers`).

At most once: the turn runs inside Powertools' ``idempotent_function`` keyed on ``(owner, session_id,
turn_id)``. The first worker writes an ``INPROGRESS`` record with a conditional put; a redelivery gets the stored
outcome back instead of a second turn, and a concurrent delivery of the same message (a second worker, e.g. after
a visibility timeout shorter than the turn) finds the record in progress and fails its record, to be retried
and answered from the record later. The lock lasts until the Lambda's own timeout (Powertools registers the
remaining time), so it never outlives the worker holding it. One window is left: a worker that appended the reply
but died before marking the record completed. Its redelivery finds the turn in the transcript
(``find_recorded_turn``) and returns it without running the model again.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.utilities.batch import SqsFifoPartialProcessor
from aws_lambda_powertools.utilities.idempotency import idempotent_function
from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyAlreadyInProgressError

from clawdbot.aws_clients import LazyClient
from clawdbot.chat.service import ChatService, TurnRequest
from clawdbot.exceptions import ClawdbotError
from clawdbot.inference.types import ChatMessage
from clawdbot.metrics.observability import session_id_var
from clawdbot.queue.exceptions import TurnDeferredError, TurnInProgressError, TurnRetriesExhaustedError
from clawdbot.queue.idempotency import KEY_PREFIX, build_persistence_layer, idempotency_config
from clawdbot.queue.messages import TurnMessage, parse_record
from clawdbot.queue.outcomes import done_outcome, failed_outcome, find_recorded_turn
from clawdbot.queue.replies import ReplyPublisher

if TYPE_CHECKING:
    from collections.abc import Callable

    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
    from aws_lambda_powertools.utilities.idempotency import BasePersistenceLayer, IdempotencyConfig
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from clawdbot.chat.service import TurnResult
    from clawdbot.config.settings import Settings
    from clawdbot.inference.base import InferenceBackend
    from clawdbot.sessions.base import SessionStore

logger = logging.getLogger(__name__)

#: 4xx statuses that a retry may cure: conflicts (a lost optimistic append), timeouts and throttling.
_RETRYABLE_CLIENT_STATUSES = frozenset({408, 409, 429})


def new_processor() -> SqsFifoPartialProcessor:
    """The batch processor the worker runs under: a failure holds back only its own session's later records.

    A batch whose every record failed is reported in ``batchItemFailures`` too, not raised: SQS retries the same
    records either way, and a lost race for a turn (``TurnInProgressError``) is routine, not a Lambda error.
    """
    processor = SqsFifoPartialProcessor(skip_group_on_error=True)
    processor.raise_on_entire_batch_failure = False  # the FIFO processor's constructor does not take it
    return processor


def is_permanent(exc: ClawdbotError) -> bool:
    """True for errors no redelivery can fix: the request itself is wrong (4xx), not the moment."""
    return 400 <= exc.status_code < 500 and exc.status_code not in _RETRYABLE_CLIENT_STATUSES


def turn_observers(settings: Settings) -> list[Callable[[TurnResult], None]]:
    """What the API's chat service tells about every finished turn (``clawdbot.traffic.install``), for the worker:
    charge its tokens to the caller's rate limits, and record the turn metrics (EMF on Lambda)."""
    from clawdbot.queue.charging import TurnCharger
    from clawdbot.traffic.aws import traffic_dynamodb
    from clawdbot.traffic.factory import build_key_store, build_rate_limiter
    from clawdbot.traffic.install import build_recorder

    dynamodb = traffic_dynamodb(settings)  # one client for the key store, the limiter and the latency guard
    charger = TurnCharger(build_key_store(settings, dynamodb), build_rate_limiter(settings, dynamodb),
                          cache_seconds=settings.key_cache_seconds)
    return [charger.on_turn, build_recorder(settings, dynamodb).on_turn]


class TurnWorker:
    """Runs queued turns. Build one per execution environment (cold start) and reuse it for every batch."""

    def __init__(self, chat: ChatService, persistence: BasePersistenceLayer, config: IdempotencyConfig,
                 replies: ReplyPublisher, *, window: int, max_receive_count: int | None = None,
                 turn_budget_seconds: float | None = None, queue_url: str | None = None) -> None:
        """``config`` must be the one ``persistence`` was configured with: the Lambda context is registered on it.

        ``window`` is how many of a session's newest entries are searched for an already recorded turn.
        ``max_receive_count`` is the queue's (see ``WorkerConfig``): the delivery on which a turn is given up.
        ``turn_budget_seconds``: a record is not started with less time than this left (``WorkerConfig``); with
        ``queue_url`` (the queue the records come from) such a record is made visible again at once.
        """
        self.chat = chat
        self.persistence = persistence
        self.config = config
        self.replies = replies
        self.window = window
        self.max_receive_count = max_receive_count
        self.turn_budget_ms = turn_budget_seconds * 1000 if turn_budget_seconds is not None else None
        self._invocation: str | None = None  # the request id of the invocation whose records we are running
        self.queue_url = queue_url
        self._sqs = LazyClient("sqs")  # made on the first hand-back
        self._idempotent_turn = idempotent_function(
            self._run_turn, data_keyword_argument="message", persistence_store=persistence, config=config,
            key_prefix=KEY_PREFIX)

    @classmethod
    def from_settings(cls, settings: Settings, *, store: SessionStore | None = None,
                      backend: InferenceBackend | None = None) -> TurnWorker:
        """The worker the settings describe; ``store``/``backend`` override the configured ones."""
        if store is None:
            from clawdbot.sessions.factory import build_store

            store = build_store(settings)
        if backend is None:
            from clawdbot.inference.factory import build_backend

            backend = build_backend(settings)
        from clawdbot.queue.config import WorkerConfig
        from clawdbot.traffic.ab import build_router

        chat = ChatService(store, backend, settings)
        chat.variants = build_router(settings, backend)  # the API's A/B arms: a session keeps its variant
        chat.observers += turn_observers(settings)
        config = idempotency_config(settings)
        persistence = build_persistence_layer(settings, config, store=store)
        worker_config = WorkerConfig()
        return cls(chat, persistence, config, ReplyPublisher.from_settings(settings), window=settings.history_window,
                   max_receive_count=worker_config.max_receive_count,
                   turn_budget_seconds=worker_config.turn_budget_seconds, queue_url=settings.queue_url)

    def record_handler(self, record: SQSRecord, lambda_context: LambdaContext | None = None) -> dict[str, Any]:
        """Process one record (the batch processor's record handler); returns the turn's outcome.

        Raises to fail the record: ``PoisonMessageError``, ``TurnInProgressError``, a transient error, or on the
        last delivery ``TurnRetriesExhaustedError`` once the turn is stored ``failed`` (the record goes to the DLQ).
        """
        message = parse_record(record)
        last_try = (self.max_receive_count is not None
                    and int(record.attributes.approximate_receive_count or 1) >= self.max_receive_count)
        if lambda_context is not None:
            left = self._short_of_time(lambda_context, last_try)
            if left is not None:
                self._hand_back(record)
                raise TurnDeferredError(f"turn {message.turn_id} not started: {left} ms left in this invocation, "
                                        f"a turn may take {self.turn_budget_ms:.0f} ms")
            # Bounds the in-progress lock by this invocation's remaining time.
            self.config.register_lambda_context(lambda_context)
        session = session_id_var.set(message.session_id)  # log lines name the session, as the API's do
        try:
            outcome: dict[str, Any] = self._idempotent_turn(message=message, last_try=last_try)
        except IdempotencyAlreadyInProgressError as exc:
            raise TurnInProgressError(f"turn {message.turn_id} is being processed by another worker") from exc
        finally:
            session_id_var.reset(session)
        self.replies.publish(message, outcome)
        if last_try and outcome.get("error", {}).get("code") == TurnRetriesExhaustedError.code:
            # Still dead-lettered: the DLQ alarm is how operators learn that turns are being given up.
            raise TurnRetriesExhaustedError(f"turn {message.turn_id} was given up and stored as failed")
        return outcome

    def _short_of_time(self, lambda_context: LambdaContext, last_try: bool) -> int | None:
        """The milliseconds left if they are too few to start another turn, else ``None``.

        The invocation's first record always runs (a worker that can never fit one turn must still make progress,
        and its timeout is the stack's to size), and so does a record on its last delivery (deferring it would
        dead-letter a turn never tried).
        """
        first = lambda_context.aws_request_id != self._invocation
        self._invocation = lambda_context.aws_request_id
        if self.turn_budget_ms is None or first or last_try:
            return None
        left = lambda_context.get_remaining_time_in_millis()
        return left if left < self.turn_budget_ms else None

    def _hand_back(self, record: SQSRecord) -> None:
        """Make a record this invocation will not start visible again now, not after the visibility timeout
        (6x the worker's timeout): the next invocation takes it. Best effort: if SQS refuses, it comes back later."""
        if self.queue_url is None:
            return
        try:
            self._sqs.get().change_message_visibility(QueueUrl=self.queue_url, ReceiptHandle=record.receipt_handle,
                                                      VisibilityTimeout=0)
        except Exception:
            logger.warning("could not hand record %s back to the queue; it returns after its visibility timeout",
                           record.message_id, exc_info=True)

    def _run_turn(self, message: TurnMessage, last_try: bool = False) -> dict[str, Any]:
        """The turn itself, run at most once per key (``idempotent_function`` stores what it returns).

        On ``last_try`` a passing failure is stored as the turn's ``failed`` outcome instead of raised: the queue
        will not deliver it again, and a turn that never gets an outcome reads ``pending`` forever.
        """
        recorded = find_recorded_turn(self.chat.store, message.session_id, message.turn_id, self.window)
        if recorded is not None:
            logger.debug("turn %s is already in session %s; not running it again", message.turn_id,
                         message.session_id)
            return recorded
        request = TurnRequest(messages=[ChatMessage("user", message.content)], session_id=message.session_id,
                              turn_id=message.turn_id, owner=message.owner, max_tokens=message.max_tokens,
                              temperature=message.temperature, top_p=message.top_p, seed=message.seed,
                              stop=message.stop or ())
        try:
            result = self.chat.complete(self.chat.prepare(request))
        except ClawdbotError as exc:
            if is_permanent(exc):
                logger.debug("turn %s failed for good: %s (%s)", message.turn_id, exc.code, exc.message)
                return failed_outcome(exc)
            if not last_try:
                raise
            return self._give_up(message, exc.code or type(exc).__name__, exc)
        except Exception as exc:
            if not last_try:
                raise
            return self._give_up(message, type(exc).__name__, exc)
        logger.debug("turn %s done in session %s", message.turn_id, message.session_id)
        return done_outcome(result)

    def _give_up(self, message: TurnMessage, reason: str, exc: Exception) -> dict[str, Any]:
        logger.warning("giving up turn %s of session %s on its last delivery: %s", message.turn_id,
                       message.session_id, reason, exc_info=exc)
        return failed_outcome(TurnRetriesExhaustedError(
            f"The turn failed on each of its {self.max_receive_count} attempts (last: {reason}) and was not run. "
            "Send it again as a new turn."))
