"""Token buckets per API key, and the one place their arithmetic lives.

Each key has two buckets that refill continuously: *requests* (capacity = requests per minute, one taken per
request) and *tokens* (capacity = tokens per minute), plus a *daily* token counter that starts again at 00:00
UTC. A request is admitted while the request bucket holds a whole token, the token bucket holds at least one
token and the day's quota is not spent. Its tokens (prompt + completion) are only known once the turn ends, so
they are charged then: a long reply may take the token bucket below zero, and the key waits until it refills —
no reply is ever cut short by a limit.

The Redis engine runs the same arithmetic in Lua (``redis.py``); the contract suite holds all engines to the
same answers.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

    from clawdbot.traffic.keys import Limits

T = TypeVar("T")
DAY_SECONDS = 86_400


@dataclass(frozen=True, slots=True)
class BucketState:
    """One key's state: bucket levels at ``updated`` (Unix seconds), and tokens used on UTC day ``day``."""

    requests: float
    tokens: float
    updated: float
    day: int
    day_tokens: int


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to "may this request go ahead?", with what OpenAI's ``x-ratelimit-*`` headers report."""

    allowed: bool
    #: Which limit refused it: ``requests``, ``tokens`` or ``daily_tokens``.
    reason: str | None = None
    #: Seconds until a retry can succeed (``Retry-After``).
    retry_after: float = 0.0
    limit_requests: int | None = None
    remaining_requests: int | None = None
    reset_requests: float = 0.0
    limit_tokens: int | None = None
    remaining_tokens: int | None = None
    reset_tokens: float = 0.0

    def headers(self) -> list[tuple[bytes, bytes]]:
        """The ``x-ratelimit-*`` headers, in OpenAI's names and formats (only for the limits a key has)."""
        out: list[tuple[bytes, bytes]] = []
        if self.limit_requests is not None:
            out += [(b"x-ratelimit-limit-requests", str(self.limit_requests).encode()),
                    (b"x-ratelimit-remaining-requests", str(self.remaining_requests).encode()),
                    (b"x-ratelimit-reset-requests", format_duration(self.reset_requests).encode())]
        if self.limit_tokens is not None:
            out += [(b"x-ratelimit-limit-tokens", str(self.limit_tokens).encode()),
                    (b"x-ratelimit-remaining-tokens", str(self.remaining_tokens).encode()),
                    (b"x-ratelimit-reset-tokens", format_duration(self.reset_tokens).encode())]
        return out


ALLOWED_UNLIMITED = Decision(allowed=True)


def format_duration(seconds: float) -> str:
    """A duration the way OpenAI's reset headers write it: ``20ms``, ``1s``, ``1.5s``, ``6m0s``, ``1h2m3s``."""
    if seconds <= 0:
        return "0s"
    ms = max(1, math.ceil(seconds * 1000 - 1e-6))  # whole milliseconds, rounded up: never promise too early
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs_text = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs_text}s"
    if minutes:
        return f"{minutes}m{secs_text}s"
    return f"{secs_text}s"


def _refill(state: BucketState | None, limits: Limits, now: float) -> BucketState:
    rpm, tpm = limits.requests_per_minute or 0, limits.tokens_per_minute or 0
    today = int(now // DAY_SECONDS)
    if state is None:
        return BucketState(float(rpm), float(tpm), now, today, 0)
    elapsed = max(0.0, now - state.updated)
    requests = min(float(rpm), state.requests + elapsed * rpm / 60)
    tokens = min(float(tpm), state.tokens + elapsed * tpm / 60)
    day, day_tokens = (state.day, state.day_tokens) if state.day == today else (today, 0)
    return BucketState(requests, tokens, max(now, state.updated), day, day_tokens)


def admit(state: BucketState | None, limits: Limits, now: float) -> tuple[BucketState, Decision]:
    """Refill, decide, and take one request if admitted. Pure: engines make it atomic."""
    s = _refill(state, limits, now)
    rpm, tpm, daily = limits.requests_per_minute, limits.tokens_per_minute, limits.daily_tokens
    reason, retry_after = None, 0.0
    if daily is not None and s.day_tokens >= daily:
        reason, retry_after = "daily_tokens", (s.day + 1) * DAY_SECONDS - now
    elif rpm is not None and s.requests < 1:
        reason, retry_after = "requests", (1 - s.requests) * 60 / rpm
    elif tpm is not None and s.tokens < 1:
        reason, retry_after = "tokens", (1 - s.tokens) * 60 / tpm
    if reason is None and rpm is not None:
        s = BucketState(s.requests - 1, s.tokens, s.updated, s.day, s.day_tokens)
    return s, _decision(s, limits, reason, retry_after)


def charge(state: BucketState | None, limits: Limits, tokens: int, now: float) -> BucketState:
    """Take a finished turn's tokens from the token bucket (may go negative) and add them to the day."""
    s = _refill(state, limits, now)
    return BucketState(s.requests, s.tokens - tokens if limits.tokens_per_minute else s.tokens, s.updated, s.day,
                       s.day_tokens + tokens)


def _decision(s: BucketState, limits: Limits, reason: str | None, retry_after: float) -> Decision:
    rpm, tpm = limits.requests_per_minute, limits.tokens_per_minute
    return Decision(
        allowed=reason is None, reason=reason, retry_after=retry_after,
        limit_requests=rpm,
        remaining_requests=None if rpm is None else max(0, math.floor(s.requests)),
        reset_requests=0.0 if rpm is None else (rpm - s.requests) * 60 / rpm,
        limit_tokens=tpm,
        remaining_tokens=None if tpm is None else max(0, math.floor(s.tokens)),
        reset_tokens=0.0 if tpm is None else (tpm - s.tokens) * 60 / tpm,
    )


class RateLimiter(ABC):
    """Admits requests and charges tokens, atomically per key across every process sharing the engine."""

    #: True when calls do network I/O: the API then runs them off the event loop.
    blocking: bool = False

    def admit(self, key_id: str, limits: Limits) -> Decision:
        if limits.unlimited:
            return ALLOWED_UNLIMITED
        return self._admit(key_id, limits)

    def charge(self, key_id: str, limits: Limits, tokens: int) -> None:
        if tokens <= 0 or (limits.tokens_per_minute is None and limits.daily_tokens is None):
            return
        self._charge(key_id, limits, tokens)

    def prime(self) -> None:  # noqa: B027 - optional hook
        """Make now what the first call would make on demand (clients): a SnapStart init calls it, so the
        snapshot holds it and a restored environment's first request does not pay for it. A no-op by default."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    @abstractmethod
    def _admit(self, key_id: str, limits: Limits) -> Decision: ...

    @abstractmethod
    def _charge(self, key_id: str, limits: Limits, tokens: int) -> None: ...


class StateRateLimiter(RateLimiter):
    """Engines that can do an atomic read-modify-write of one key's state run the shared Python arithmetic."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock

    def _admit(self, key_id: str, limits: Limits) -> Decision:
        def step(state: BucketState | None) -> tuple[BucketState | None, Decision]:
            new, decision = admit(state, limits, self.clock())
            # A refusal changes nothing worth a write: the next call refills from the stored state anyway.
            return (new if decision.allowed else None), decision

        return self._update(key_id, step)

    def _charge(self, key_id: str, limits: Limits, tokens: int) -> None:
        self._update(key_id, lambda state: (charge(state, limits, tokens, self.clock()), None))

    @abstractmethod
    def _update(self, key_id: str, step: Callable[[BucketState | None], tuple[BucketState | None, T]]) -> T:
        """Atomically: read the key's state, apply ``step``, store the new state unless it is ``None``."""
