"""The local server's global concurrency cap: at most N requests in flight, a bounded queue, then 503.

Lambda needs none of this — each execution environment serves one request at a time and the function's
reserved concurrency caps the fleet (the CDK stack sets it from the same ``CLAWDBOT_MAX_CONCURRENCY``). Locally,
without a cap a burst would start every generation at once and every client would wait for all of them; with
it, requests past the cap wait in arrival order for up to ``queue_timeout`` seconds, and once ``max_queue`` are
waiting, or a wait times out, the answer is 503 with ``Retry-After``. A request holds its slot until its
response (a whole stream included) is sent. ``/healthz`` and ``/metrics`` bypass the cap so a saturated server
still answers its probes.

The same class admits chat turns (``Resources.turns``): with the model in this process, the local server runs as
many chat turns at once as the engine runs generations (``InferenceBackend.generation_slots``, one per usable CPU)
and the others wait in arrival order, before any of their work starts. The chat route takes the slot once the
request is read and valid (a client that sends its body slowly holds nothing) and gives it back when the turn's
generation ends (a client that reads its stream slowly does not hold it either). Capping the generations alone let
every waiting turn's other work (its session read and context fit, its append, its HTTP) run beside the two
generations on two cores: ``bench.throughput`` at 16 sessions gave 91-96 turns/s with a p99 of 306-330 ms (the
engine's semaphore lets a newcomer barge, so some turns wait much longer than others), against 102-103 turns/s and
196-206 ms with turns admitted whole. Other routes (session reads, keys, the pages) are not held behind the model.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import TYPE_CHECKING

from clawdbot.traffic.auth import send_error
from clawdbot.traffic.exceptions import OverloadedError

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

logger = logging.getLogger(__name__)

BYPASS_PATHS = frozenset({"/healthz", "/metrics"})


class ConcurrencyLimit:
    """The cap's state (shared with the metrics gauges ``RequestsInFlight`` / ``RequestsQueued``)."""

    def __init__(self, max_concurrency: int, max_queue: int, queue_timeout: float) -> None:
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.queue_timeout = queue_timeout
        self._slots = asyncio.Semaphore(max_concurrency)
        self.in_flight = 0
        self.waiting = 0

    async def acquire(self) -> str | None:
        """Take a slot, waiting in line if need be; returns why not (``None`` once a slot is held)."""
        if self._slots.locked():
            if self.waiting >= self.max_queue:
                return "the wait queue is full"
            self.waiting += 1
            try:
                async with asyncio.timeout(self.queue_timeout):
                    await self._slots.acquire()
            except TimeoutError:
                return f"no slot freed up within {self.queue_timeout:g}s"
            finally:
                self.waiting -= 1
        else:
            await self._slots.acquire()
        self.in_flight += 1
        return None

    def release(self) -> None:
        self.in_flight -= 1
        self._slots.release()

    def refusal(self, why: str, what: str = "requests") -> OverloadedError:
        """The 503 for a request :meth:`acquire` turned away, with a ``Retry-After`` of the wait it gave up on."""
        retry = str(max(1, min(5, math.ceil(self.queue_timeout or 1))))
        return OverloadedError(
            f"The server is at capacity ({self.max_concurrency} {what} in flight; {why}). Please retry.",
            headers={"retry-after": retry})


class ConcurrencyLimitMiddleware:
    def __init__(self, app: ASGIApp, limit: ConcurrencyLimit) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in BYPASS_PATHS:
            await self.app(scope, receive, send)
            return
        refusal = await self.limit.acquire()
        if refusal is not None:
            await self._overloaded(send, refusal)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.limit.release()

    async def _overloaded(self, send: Send, why: str) -> None:
        logger.debug("refused a request: %s", why)
        await send_error(send, self.limit.refusal(why))
