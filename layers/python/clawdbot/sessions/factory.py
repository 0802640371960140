"""Choose and build the session store named by ``CLAWDBOT_SESSION_STORE``.

Engines are imported here, lazily, so the process that runs SQLite never imports boto3's DynamoDB paths or redis.
``ensure_dynamodb_table`` is the one definition of the table's schema outside the CDK stack (which mirrors it):
``clawdbot serve`` calls it when pointed at a local endpoint (DynamoDB Local) that lacks the table.
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Any

from clawdbot.exceptions import ClawdbotError
from clawdbot.sessions.base import StoreConfig

if TYPE_CHECKING:
    from clawdbot.config.settings import Settings
    from clawdbot.sessions.base import SessionStore

logger = logging.getLogger(__name__)

#: The table's key schema and TTL attribute: the CDK stack declares the same.
DYNAMODB_PARTITION_KEY = "pk"
DYNAMODB_SORT_KEY = "sk"
DYNAMODB_TTL_ATTRIBUTE = "expires_at"


def store_config(settings: Settings) -> StoreConfig:
    return StoreConfig(ttl_seconds=settings.session_ttl_seconds)


def local_dynamodb_endpoint() -> str | None:
    """The DynamoDB endpoint override, if it points anywhere but AWS (DynamoDB Local on a laptop or in a
    container); None when boto3 talks to AWS itself. Read from boto3's own variables."""
    from urllib.parse import urlsplit

    url = os.environ.get("AWS_ENDPOINT_URL_DYNAMODB") or os.environ.get("AWS_ENDPOINT_URL")
    if not url:
        return None
    host = (urlsplit(url).hostname or "").lower()
    return None if host.endswith((".amazonaws.com", ".amazonaws.com.cn")) else url


def build_store(settings: Settings, *, create_table: bool | None = None) -> SessionStore:
    """The store for ``settings.session_store``.

    ``create_table`` (DynamoDB only; default ``settings.dynamodb_create_table``) creates a missing table first.
    Unset, it does so only against a local endpoint (``local_dynamodb_endpoint``), so ``clawdbot serve`` next to
    DynamoDB Local just works, while the deployed stack's table, which belongs to CloudFormation, is never created,
    and a Lambda cold start makes no extra call.
    """
    config = store_config(settings)
    kind = settings.session_store
    if kind == "sqlite":
        from clawdbot.sessions.sqlite import SQLiteSessionStore

        return SQLiteSessionStore(settings.data_dir, config)
    if kind == "dynamodb":
        from clawdbot.sessions.dynamodb import DynamoDBSessionStore

        store = DynamoDBSessionStore(settings.dynamodb_table, config)
        if create_table is None:
            create_table = settings.dynamodb_create_table
        if create_table or (create_table is None and local_dynamodb_endpoint() is not None):
            ensure_dynamodb_table(store.client, settings.dynamodb_table)
        return store
    if kind == "redis":
        from clawdbot.sessions.redis import RedisSessionStore

        if not settings.redis_url:  # a deployment mistake, not the client's: a 500-class error
            raise ClawdbotError("CLAWDBOT_SESSION_STORE=redis needs CLAWDBOT_REDIS_URL.", code="missing_redis_url")
        return RedisSessionStore.from_url(settings.redis_url, config)
    raise ValueError(f"Unknown session store {kind!r}")  # unreachable: Settings validates the literal


def ensure_dynamodb_table(client: Any, name: str, *, wait_seconds: float = 60.0) -> bool:
    """Create the sessions table with the stack's schema if it does not exist; True if it was created.

    Schema: ``pk`` (S) hash key, ``sk`` (S) range key, on-demand billing, TTL on ``expires_at``.
    """
    try:
        client.describe_table(TableName=name)
        return False
    except client.exceptions.ResourceNotFoundException:
        pass
    logger.debug("creating DynamoDB table %s", name)
    try:
        client.create_table(
            TableName=name,
            AttributeDefinitions=[
                {"AttributeName": DYNAMODB_PARTITION_KEY, "AttributeType": "S"},
                {"AttributeName": DYNAMODB_SORT_KEY, "AttributeType": "S"},
            ],
            KeySchema=[
                {"AttributeName": DYNAMODB_PARTITION_KEY, "KeyType": "HASH"},
                {"AttributeName": DYNAMODB_SORT_KEY, "KeyType": "RANGE"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
    except client.exceptions.ResourceInUseException:  # another process created it meanwhile
        return False
    deadline = time.monotonic() + wait_seconds
    while client.describe_table(TableName=name)["Table"]["TableStatus"] != "ACTIVE":
        if time.monotonic() > deadline:
            raise TimeoutError(f"DynamoDB table {name} did not become ACTIVE in {wait_seconds:.0f}s")
        time.sleep(0.2)
    client.update_time_to_live(
        TableName=name,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": DYNAMODB_TTL_ATTRIBUTE},
    )
    return True
