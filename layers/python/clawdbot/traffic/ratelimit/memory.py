"""In-process buckets: the embedded default (one server process, no store round-trip on the hot path)."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, TypeVar

from clawdbot.traffic.ratelimit.base import StateRateLimiter

if TYPE_CHECKING:
    from collections.abc import Callable

    from clawdbot.traffic.ratelimit.base import BucketState

T = TypeVar("T")


class MemoryRateLimiter(StateRateLimiter):
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        super().__init__(clock)
        self._states: dict[str, BucketState] = {}
        self._lock = threading.Lock()

    def _update(self, key_id: str, step: Callable[[BucketState | None], tuple[BucketState | None, T]]) -> T:
        with self._lock:
            new, result = step(self._states.get(key_id))
            if new is not None:
                self._states[key_id] = new
            return result
