"""The local server's global concurrency cap: at most N requests in flight, a bounded queue, then 503.

Lambda needs none of this — each execution environment serves one request at a time and the function's
reserved concurrency caps the fleet (the CDK stack sets it from the same ``CLAWDBOT_MAX_CONCURRENCY``). Locally,
without a cap a burst would start every generation at once and every client would wait for all of them; with
it, requests past the cap wait in arrival order for up to ``queue_timeout`` seconds, and once ``max_queue`` are
waiting, or a wait times out, the answer is 503 with ``Retry-After``. A request holds its slot until its
response (a whole stream included) is sent. ``/healthz`` and ``/metrics`` bypass the cap so a saturated server
still answers its probes.
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
        limit = self.limit
        retry = str(max(1, min(5, math.ceil(limit.queue_timeout or 1))))
        await send_error(send, OverloadedError(
            f"The server is at capacity ({limit.max_concurrency} requests in flight; {why}). Please retry.",
            headers={"retry-after": retry}))
