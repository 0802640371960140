"""Traffic control: API keys, per-key rate limits and quotas, the concurrency cap, and A/B assignment.

Nothing heavy is imported here (the settings module imports ``clawdbot.traffic.ab``); engines live in
``keystore/`` and ``ratelimit/`` and are chosen by ``clawdbot.traffic.factory`` from the settings.
"""

from clawdbot.traffic.exceptions import (
    AuthenticationError,
    OverloadedError,
    QuotaExceededError,
    RateLimitExceededError,
    TrafficError,
)

__all__ = ["AuthenticationError", "OverloadedError", "QuotaExceededError", "RateLimitExceededError", "TrafficError"]
