"""Buckets in the sessions table, one item per key, updated by optimistic conditional writes.

Each admit/charge reads the item (strongly consistent), runs the shared arithmetic and writes it back on
condition that its version is still the one read; a writer that lost a race re-reads and tries again. A refused
request writes nothing. Item: ``pk = "clawdbot#ratelimit#<key id>"``, ``sk = "state"``, the numbers ``r t u d
dt``, a version ``v`` and ``expires_at`` (the table's TTL attribute) two days ahead, so idle keys clean up.
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING, Any, TypeVar

from clawdbot.traffic.aws import lazy_dynamodb_client
from clawdbot.traffic.exceptions import OverloadedError
from clawdbot.traffic.ratelimit.base import BucketState, StateRateLimiter

if TYPE_CHECKING:
    from collections.abc import Callable

T = TypeVar("T")
PARTITION_PREFIX = "clawdbot#ratelimit#"
MAX_ATTEMPTS = 25
IDLE_EXPIRY_SECONDS = 2 * 86_400


class DynamoDBRateLimiter(StateRateLimiter):
    blocking = True

    def __init__(self, table: str, client: Any = None, clock: Callable[[], float] = time.time) -> None:
        super().__init__(clock)
        self.table = table
        self._client = lazy_dynamodb_client(client)

    @property
    def client(self) -> Any:
        return self._client.get()

    def prime(self) -> None:
        self._client.get()

    def _key(self, key_id: str) -> dict[str, Any]:
        return {"pk": {"S": PARTITION_PREFIX + key_id}, "sk": {"S": "state"}}

    def _update(self, key_id: str, step: Callable[[BucketState | None], tuple[BucketState | None, T]]) -> T:
        key = self._key(key_id)
        for attempt in range(MAX_ATTEMPTS):
            if attempt:  # lost a race: back off a little, with jitter, so racers spread out
                time.sleep(random.uniform(0, 0.002 * min(attempt, 10)))
            item = self.client.get_item(TableName=self.table, Key=key, ConsistentRead=True).get("Item")
            state = None if item is None else BucketState(
                float(item["r"]["N"]), float(item["t"]["N"]), float(item["u"]["N"]), int(item["d"]["N"]),
                int(item["dt"]["N"]))
            version = 0 if item is None else int(item["v"]["N"])
            new, result = step(state)
            if new is None:
                return result
            new_item = {**key, "r": {"N": f"{new.requests:.6f}"}, "t": {"N": f"{new.tokens:.6f}"},
                        "u": {"N": f"{new.updated:.6f}"}, "d": {"N": str(new.day)}, "dt": {"N": str(new.day_tokens)},
                        "v": {"N": str(version + 1)},
                        "expires_at": {"N": str(int(new.updated) + IDLE_EXPIRY_SECONDS)}}
            condition: dict[str, Any] = (
                {"ConditionExpression": "attribute_not_exists(pk)"} if item is None else
                {"ConditionExpression": "v = :v", "ExpressionAttributeValues": {":v": {"N": str(version)}}})
            try:
                self.client.put_item(TableName=self.table, Item=new_item, **condition)
            except self.client.exceptions.ConditionalCheckFailedException:
                continue  # someone else updated the key between our read and write: decide again
            return result
        raise OverloadedError("Too much contention on this API key's rate limit; retry shortly.",
                              headers={"retry-after": "1"})
