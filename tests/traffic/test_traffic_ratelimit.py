"""Rate limits: the bucket arithmetic (with a clock we move), then the same contract on every engine."""

from __future__ import annotations

import math
import threading
from typing import TYPE_CHECKING

import pytest

from clawdbot.traffic.keys import Limits
from clawdbot.traffic.ratelimit.base import DAY_SECONDS, format_duration
from clawdbot.traffic.ratelimit.memory import MemoryRateLimiter

if TYPE_CHECKING:
    from collections.abc import Callable

    from clawdbot.traffic.ratelimit.base import RateLimiter


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# ------------------------------------------------------------------------------ arithmetic (in-process)
def test_request_bucket_bursts_to_capacity_then_refills_continuously() -> None:
    clock = Clock()
    limiter = MemoryRateLimiter(clock)
    limits = Limits(requests_per_minute=3)
    decisions = [limiter.admit("k", limits) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining_requests for d in decisions[:3]] == [2, 1, 0]
    refused = decisions[3]
    assert refused.reason == "requests" and refused.retry_after == pytest.approx(20.0)
    assert refused.reset_requests == pytest.approx(60.0)  # empty: a full minute to be whole again

    clock.now += 19.9
    assert not limiter.admit("k", limits).allowed
    clock.now += 0.2  # 20.1 s after: one request has dripped back
    again = limiter.admit("k", limits)
    assert again.allowed and again.remaining_requests == 0
    clock.now += 600
    assert limiter.admit("k", limits).remaining_requests == 2  # refills to capacity, never beyond


def test_tokens_are_charged_after_the_turn_and_may_go_into_debt() -> None:
    clock = Clock()
    limiter = MemoryRateLimiter(clock)
    limits = Limits(tokens_per_minute=600)  # 10 tokens per second
    assert limiter.admit("k", limits).remaining_tokens == 600
    limiter.charge("k", limits, 900)  # a long reply: 300 tokens of debt
    refused = limiter.admit("k", limits)
    assert (refused.allowed, refused.reason, refused.remaining_tokens) == (False, "tokens", 0)
    assert refused.retry_after == pytest.approx(30.1)  # 301 tokens at 10/s
    clock.now += 31
    ok = limiter.admit("k", limits)
    assert ok.allowed and ok.remaining_tokens == 10
    assert ok.reset_tokens == pytest.approx(59.0)


def test_daily_quota_renews_at_utc_midnight() -> None:
    clock = Clock(1_800_000_000.0 - 1_800_000_000.0 % DAY_SECONDS + DAY_SECONDS - 100)  # 100 s before midnight
    limiter = MemoryRateLimiter(clock)
    limits = Limits(daily_tokens=1000)
    assert limiter.admit("k", limits).allowed
    limiter.charge("k", limits, 1000)
    refused = limiter.admit("k", limits)
    assert refused.reason == "daily_tokens" and refused.retry_after == pytest.approx(100)
    assert refused.headers() == []  # no per-minute limits: nothing to report in x-ratelimit-*
    clock.now += 100
    assert limiter.admit("k", limits).allowed


def test_unlimited_keys_are_admitted_without_state() -> None:
    limiter = MemoryRateLimiter(Clock())
    for _ in range(1000):
        assert limiter.admit("k", Limits()).allowed
    limiter.charge("k", Limits(), 10**9)
    assert limiter._states == {}


def test_headers_use_openais_names_and_formats() -> None:
    limiter = MemoryRateLimiter(Clock())
    decision = limiter.admit("k", Limits(requests_per_minute=60, tokens_per_minute=150_000))
    assert dict(decision.headers()) == {
        b"x-ratelimit-limit-requests": b"60", b"x-ratelimit-remaining-requests": b"59",
        b"x-ratelimit-reset-requests": b"1s",
        b"x-ratelimit-limit-tokens": b"150000", b"x-ratelimit-remaining-tokens": b"150000",
        b"x-ratelimit-reset-tokens": b"0s"}


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (0.02, "20ms"), (0.0004, "1ms"), (1, "1s"),
                                               (1.5, "1.5s"), (59.9999, "1m0s"), (360, "6m0s"),
                                               (3723, "1h2m3s"), (61.25, "1m1.25s")])
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


# ------------------------------------------------------------------------------ every engine
def test_engines_agree_on_bursts_and_refusals(make_limiter: Callable[[], RateLimiter], key_id: str) -> None:
    limiter = make_limiter()
    limits = Limits(requests_per_minute=3, tokens_per_minute=1000, daily_tokens=10**6)
    decisions = [limiter.admit(key_id, limits) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining_requests for d in decisions] == [2, 1, 0, 0]
    assert decisions[3].reason == "requests"
    assert 19 < decisions[3].retry_after <= 20  # (1 - refill so far) * 20 s
    assert decisions[0].limit_tokens == 1000 and decisions[0].remaining_tokens == 1000


def test_engines_charge_tokens_and_the_daily_quota(make_limiter: Callable[[], RateLimiter], key_id: str) -> None:
    limiter = make_limiter()
    per_minute = Limits(tokens_per_minute=60)
    assert limiter.admit(key_id, per_minute).allowed
    limiter.charge(key_id, per_minute, 200)
    refused = limiter.admit(key_id, per_minute)
    assert refused.reason == "tokens" and 140 < refused.retry_after <= 141  # 141 tokens at 1/s

    daily_key = key_id + "-daily"
    daily = Limits(daily_tokens=50)
    limiter.charge(daily_key, daily, 30)
    assert limiter.admit(daily_key, daily).allowed
    limiter.charge(daily_key, daily, 20)
    refused = limiter.admit(daily_key, daily)
    assert refused.reason == "daily_tokens" and 0 < refused.retry_after <= DAY_SECONDS


def test_engines_are_atomic_under_concurrent_admits(make_limiter: Callable[[], RateLimiter], key_id: str) -> None:
    # GIVEN two limiter instances on one backing store (two server processes) and 16 racing threads
    limiters = [make_limiter(), make_limiter()]
    limits = Limits(requests_per_minute=10)
    allowed: list[bool] = []
    lock = threading.Lock()
    start = threading.Barrier(16)

    def worker(i: int) -> None:
        start.wait()
        decision = limiters[i % 2].admit(key_id, limits)
        with lock:
            allowed.append(decision.allowed)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # THEN exactly the capacity got through: no lost update, no double spend
    assert allowed.count(True) == 10 and allowed.count(False) == 6


def test_refused_requests_do_not_drain_the_bucket(make_limiter: Callable[[], RateLimiter], key_id: str) -> None:
    limiter = make_limiter()
    limits = Limits(requests_per_minute=2)
    assert all(limiter.admit(key_id, limits).allowed for _ in range(2))
    refusals = [limiter.admit(key_id, limits) for _ in range(5)]
    assert not any(d.allowed for d in refusals)
    # retry_after keeps shrinking (refill continues) instead of growing with each refusal
    assert refusals[-1].retry_after <= refusals[0].retry_after
    assert math.isclose(refusals[0].retry_after, 30, abs_tol=1)
