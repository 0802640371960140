"""Keys in the sessions table, one item per key in a partition of their own.

Item: ``pk = "clawdbot#apikeys"``, ``sk = <sha256 of the key>``, ``record = <JSON>``. ``#`` never appears in a
session id, so these items cannot collide with sessions; one partition makes ``keys list`` a single Query and
authentication a single GetItem (and the API caches what it reads).
"""

from __future__ import annotations

import json
from typing import Any

from clawdbot.traffic.aws import lazy_dynamodb_client
from clawdbot.traffic.keys import ApiKey
from clawdbot.traffic.keystore.base import KeyStore

PARTITION = "clawdbot#apikeys"


class DynamoDBKeyStore(KeyStore):
    def __init__(self, table: str, client: Any = None, *, partition: str = PARTITION) -> None:
        self.table = table
        self.partition = partition
        self._client = lazy_dynamodb_client(client)

    @property
    def client(self) -> Any:
        return self._client.get()

    def prime(self) -> None:
        self._client.get()

    def _item(self, record: ApiKey) -> dict[str, Any]:
        return {"pk": {"S": self.partition}, "sk": {"S": record.key_hash},
                "record": {"S": json.dumps(record.to_dict())}}

    def _insert(self, record: ApiKey) -> bool:
        try:
            self.client.put_item(TableName=self.table, Item=self._item(record),
                                 ConditionExpression="attribute_not_exists(pk)")
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def _get(self, key_hash: str) -> ApiKey | None:
        item = self.client.get_item(TableName=self.table, Key={"pk": {"S": self.partition}, "sk": {"S": key_hash}},
                                    ConsistentRead=True).get("Item")
        return None if item is None else ApiKey.from_dict(json.loads(item["record"]["S"]))

    def _put(self, record: ApiKey) -> None:
        self.client.put_item(TableName=self.table, Item=self._item(record))

    def _list(self) -> list[ApiKey]:
        keys: list[ApiKey] = []
        paginator = self.client.get_paginator("query")
        for page in paginator.paginate(TableName=self.table, KeyConditionExpression="pk = :pk",
                                       ExpressionAttributeValues={":pk": {"S": self.partition}}, ConsistentRead=True):
            keys.extend(ApiKey.from_dict(json.loads(item["record"]["S"])) for item in page.get("Items", []))
        return keys
