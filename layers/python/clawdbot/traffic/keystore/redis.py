"""Keys in one Redis hash (``clawdbot:apikeys``: field = key hash, value = the record as JSON)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from clawdbot.traffic.keys import ApiKey
from clawdbot.traffic.keystore.base import KeyStore

if TYPE_CHECKING:
    from redis import Redis

HASH_NAME = "clawdbot:apikeys"


class RedisKeyStore(KeyStore):
    def __init__(self, client: Redis, *, hash_name: str = HASH_NAME) -> None:
        self.client = client
        self.hash_name = hash_name

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisKeyStore:
        import redis

        return cls(redis.Redis.from_url(url, decode_responses=True), **kwargs)

    def _insert(self, record: ApiKey) -> bool:
        return bool(self.client.hsetnx(self.hash_name, record.key_hash, json.dumps(record.to_dict())))

    def _get(self, key_hash: str) -> ApiKey | None:
        raw = self.client.hget(self.hash_name, key_hash)
        return None if raw is None else ApiKey.from_dict(json.loads(raw))

    def _put(self, record: ApiKey) -> None:
        self.client.hset(self.hash_name, record.key_hash, json.dumps(record.to_dict()))

    def _list(self) -> list[ApiKey]:
        return [ApiKey.from_dict(json.loads(raw)) for raw in self.client.hvals(self.hash_name)]

    def close(self) -> None:
        self.client.close()
