"""Build the key store and rate limiter that match the configured session store.

``sqlite`` (embedded): keys in the data directory, in-process buckets — no store round-trip per request.
``redis``: keys and buckets in the same Redis. ``dynamodb``: keys and buckets in the sessions table.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from clawdbot.exceptions import InvalidRequestError

if TYPE_CHECKING:
    from clawdbot.aws_clients import LazyClient
    from clawdbot.config.settings import Settings
    from clawdbot.traffic.keystore.base import KeyStore
    from clawdbot.traffic.ratelimit.base import RateLimiter

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


def on_lambda() -> bool:
    return bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME"))


def keys_always_required(settings: Settings) -> bool:
    """Whether every request needs a key even before any key exists in the store.

    Yes when configured so, when a deploy key is configured (the AWS stack always passes its secret, so a
    deployed API is never open, not even for the instant before the key is imported), or when the server is
    bound beyond loopback. Otherwise — ``make serve`` — the server is open until the first key is created.
    """
    if settings.auth == "required" or settings.api_key_secret_arn or settings.bootstrap_key_sha256:
        return True
    host = settings.bind_host.strip("[]")
    return host not in LOOPBACK_HOSTS and not host.startswith("127.")


def _redis_url(settings: Settings) -> str:
    if not settings.redis_url:
        raise InvalidRequestError("CLAWDBOT_SESSION_STORE=redis needs CLAWDBOT_REDIS_URL.", code="missing_redis_url")
    return settings.redis_url


def build_key_store(settings: Settings, dynamodb: LazyClient | None = None) -> KeyStore:
    """``dynamodb``: a client to share with the other traffic engines (``clawdbot.traffic.aws.traffic_dynamodb``)."""
    kind = settings.session_store
    if kind == "redis":
        from clawdbot.traffic.keystore.redis import RedisKeyStore

        return RedisKeyStore.from_url(_redis_url(settings))
    if kind == "dynamodb":
        from clawdbot.traffic.keystore.dynamodb import DynamoDBKeyStore

        return DynamoDBKeyStore(settings.dynamodb_table, dynamodb)
    from clawdbot.traffic.keystore.sqlite import SQLiteKeyStore

    return SQLiteKeyStore(settings.data_dir)


def build_rate_limiter(settings: Settings, dynamodb: LazyClient | None = None) -> RateLimiter:
    """``dynamodb``: as for :func:`build_key_store`."""
    kind = settings.session_store
    if kind == "redis":
        from clawdbot.traffic.ratelimit.redis import RedisRateLimiter

        return RedisRateLimiter.from_url(_redis_url(settings))
    if kind == "dynamodb":
        from clawdbot.traffic.ratelimit.dynamodb import DynamoDBRateLimiter

        return DynamoDBRateLimiter(settings.dynamodb_table, dynamodb)
    from clawdbot.traffic.ratelimit.memory import MemoryRateLimiter

    return MemoryRateLimiter()
