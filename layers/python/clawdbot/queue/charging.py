"""Charge a queued turn's tokens to the API key that enqueued it.

The API charges a synchronous turn through ``TrafficControl.on_turn``, which finds the caller's limits in the key
cache its own authentication filled. The worker never authenticates anyone: its turns name their caller only by
key id (``TurnMessage.owner``). So the worker keeps its own id → key map, read from the same key store, and charges
the same rate limiter the API admits against (Redis or DynamoDB when deployed), so a queued turn's tokens count
against the caller's next requests exactly as a synchronous turn's do.

The map is one listing of the keys (a DynamoDB query on the key partition, a Redis ``HVALS``), reread when older
than ``cache_seconds`` or when a turn names a key it lacks (keys are revoked, never deleted, so that happens once
per new key): a busy worker does not read the key store per turn, and a key's new limits apply within
``cache_seconds``, as they do in the API.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from clawdbot.chat.service import TurnResult
    from clawdbot.traffic.keys import ApiKey
    from clawdbot.traffic.keystore.base import KeyStore
    from clawdbot.traffic.ratelimit.base import RateLimiter

logger = logging.getLogger(__name__)


class TurnCharger:
    """A chat-service observer: takes a finished turn's prompt + completion tokens from its owner's buckets."""

    def __init__(self, keys: KeyStore, limiter: RateLimiter, *, cache_seconds: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.keys = keys
        self.limiter = limiter
        self.cache_seconds = cache_seconds
        self._clock = clock
        self._by_id: dict[str, ApiKey] = {}
        self._fresh_until = -float("inf")
        self._lock = threading.Lock()

    def on_turn(self, result: TurnResult) -> None:
        owner = result.turn.owner
        if not owner:  # an open local server: nobody to charge
            return
        key = self.key(owner)
        if key is None:
            logger.debug("turn %s names key %s, which the key store does not know; nothing charged",
                         result.turn.turn_id, owner)
            return
        self.limiter.charge(key.key_id, key.limits, result.prompt_tokens + result.completion_tokens)

    def key(self, key_id: str) -> ApiKey | None:
        """The key with this id, revoked or not (its tokens were spent either way); ``None`` if unknown."""
        with self._lock:
            now = self._clock()
            if now >= self._fresh_until or key_id not in self._by_id:
                self._by_id = {k.key_id: k for k in self.keys.list(include_revoked=True)}
                self._fresh_until = now + self.cache_seconds
            return self._by_id.get(key_id)

    def close(self) -> None:
        self.keys.close()
        self.limiter.close()
