"""The latency guard: N consecutive slow turns (default 5 over ``CLAWDBOT_LATENCY_THRESHOLD_MS``) → ``LatencyBreach``.

"Consecutive" is across the whole fleet, not per process: stateless Lambda instances share the streak through
an atomic counter in the session store's database — Redis ``INCR``, or a DynamoDB ``ADD`` update that returns
the new value. A slow turn increments the streak and breaches when it reaches N (and on every slow turn after,
until a fast one resets it), so the high-resolution metric keeps firing while the service stays slow; the
stack's alarm on it drives scale-out. The embedded server keeps the streak in memory (it is the only instance).
Streaks are kept per A/B variant.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

from clawdbot.traffic.aws import lazy_dynamodb_client

if TYPE_CHECKING:
    from redis import Redis

    from clawdbot.aws_clients import LazyClient
    from clawdbot.config.settings import Settings


class StreakCounter(ABC):
    """An atomic counter per name, shared by every instance that uses the same backing store."""

    @abstractmethod
    def increment(self, name: str) -> int:
        """Add one and return the new value."""

    @abstractmethod
    def reset(self, name: str) -> None: ...

    @abstractmethod
    def value(self, name: str) -> int:
        """The current value (0 if never counted), for display on /ops."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


class MemoryStreakCounter(StreakCounter):
    def __init__(self) -> None:
        self._values: dict[str, int] = {}
        self._lock = threading.Lock()

    def increment(self, name: str) -> int:
        with self._lock:
            self._values[name] = self._values.get(name, 0) + 1
            return self._values[name]

    def reset(self, name: str) -> None:
        with self._lock:
            self._values[name] = 0

    def value(self, name: str) -> int:
        return self._values.get(name, 0)


class RedisStreakCounter(StreakCounter):
    PREFIX = "clawdbot:latency-streak:"
    #: A streak left alone this long (no turns at all) starts over.
    EXPIRY_SECONDS = 3600

    def __init__(self, client: Redis) -> None:
        self.client = client

    @classmethod
    def from_url(cls, url: str) -> RedisStreakCounter:
        import redis

        return cls(redis.Redis.from_url(url, decode_responses=True))

    def increment(self, name: str) -> int:
        pipe = self.client.pipeline(transaction=True)
        pipe.incr(self.PREFIX + name)
        pipe.expire(self.PREFIX + name, self.EXPIRY_SECONDS)
        return int(pipe.execute()[0])

    def reset(self, name: str) -> None:
        self.client.set(self.PREFIX + name, 0, ex=self.EXPIRY_SECONDS)

    def value(self, name: str) -> int:
        return int(self.client.get(self.PREFIX + name) or 0)

    def close(self) -> None:
        self.client.close()


class DynamoDBStreakCounter(StreakCounter):
    """Item ``pk = "clawdbot#latency#<name>"``, ``sk = "streak"``, number ``streak``."""

    PREFIX = "clawdbot#latency#"

    def __init__(self, table: str, client: Any = None) -> None:
        self.table = table
        self._client = lazy_dynamodb_client(client)

    @property
    def client(self) -> Any:
        return self._client.get()

    def _key(self, name: str) -> dict[str, Any]:
        return {"pk": {"S": self.PREFIX + name}, "sk": {"S": "streak"}}

    def increment(self, name: str) -> int:
        answer = self.client.update_item(TableName=self.table, Key=self._key(name), UpdateExpression="ADD streak :one",
                                         ExpressionAttributeValues={":one": {"N": "1"}}, ReturnValues="UPDATED_NEW")
        return int(answer["Attributes"]["streak"]["N"])

    def reset(self, name: str) -> None:
        self.client.update_item(TableName=self.table, Key=self._key(name), UpdateExpression="SET streak = :zero",
                                ExpressionAttributeValues={":zero": {"N": "0"}})

    def value(self, name: str) -> int:
        item = self.client.get_item(TableName=self.table, Key=self._key(name)).get("Item") or {}
        return int(item.get("streak", {}).get("N", 0))


class LatencyGuard:
    def __init__(self, counter: StreakCounter, threshold_ms: float, turns: int = 5) -> None:
        self.counter = counter
        self.threshold_ms = threshold_ms
        self.turns = turns

    def observe(self, variant: str, latency_ms: float) -> bool:
        """Record one turn; True when it breaches (it completes, or extends, a streak of ``turns`` slow ones)."""
        if latency_ms > self.threshold_ms:
            return self.counter.increment(variant) >= self.turns
        self.counter.reset(variant)
        return False


def build_streak_counter(settings: Settings, dynamodb: LazyClient | None = None) -> StreakCounter:
    """The counter in the configured session store's database (in memory for the embedded SQLite default);
    ``dynamodb``: the client it shares with the other traffic engines."""
    if settings.session_store == "redis" and settings.redis_url:
        return RedisStreakCounter.from_url(settings.redis_url)
    if settings.session_store == "dynamodb":
        return DynamoDBStreakCounter(settings.dynamodb_table, dynamodb)
    return MemoryStreakCounter()
