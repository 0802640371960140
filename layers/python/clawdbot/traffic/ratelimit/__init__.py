"""Per-key rate limits: request and token buckets plus a daily token quota.

The contract and the bucket arithmetic are in ``base``; engines (imported explicitly): ``memory`` (in-process,
the embedded default), ``redis`` (one Lua script per operation), ``dynamodb`` (conditional writes).
"""

from clawdbot.traffic.ratelimit.base import BucketState, Decision, RateLimiter

__all__ = ["BucketState", "Decision", "RateLimiter"]
