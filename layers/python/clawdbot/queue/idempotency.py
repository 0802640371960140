"""Which Powertools idempotency persistence layer holds turn records, and how a turn's key is derived.

One record per turn, keyed on ``(owner, session_id, turn_id)`` (a turn id alone could be chosen by a client and
collide across sessions): ``INPROGRESS`` while a worker runs it, then ``COMPLETED`` with the turn's outcome
(``clawdbot.queue.outcomes``) as the response a redelivery gets back instead of running the turn again.

The layer follows the session store, so a deployment has no extra table or server:

* ``dynamodb``: the sessions table itself (``pk``/``sk``, TTL on ``expires_at``). Records share one partition key
  (:data:`DYNAMODB_PARTITION`), fixed so that the API and the worker, two functions with different names, read and
  write the same items;
* ``redis``: the sessions Redis;
* ``sqlite``: ``idempotency.sqlite3`` next to the sessions database.
"""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.idempotency import BasePersistenceLayer

    from clawdbot.config.settings import Settings
    from clawdbot.sessions.base import SessionStore

logger = logging.getLogger(__name__)

#: Prefix of every turn's idempotency key (``<prefix>#<sha256>``); fixed, so renaming a function keeps its records.
KEY_PREFIX = "clawdbot-turn"
#: The partition key value of turn records in the sessions table (Powertools' ``static_pk_value``).
DYNAMODB_PARTITION = "clawdbot#idempotency"
#: The JMESPath over a ``TurnMessage`` dump that selects the key fields.
KEY_EXPRESSION = "[owner, session_id, turn_id]"


def idempotency_config(settings: Settings) -> IdempotencyConfig:
    return IdempotencyConfig(
        event_key_jmespath=KEY_EXPRESSION,
        raise_on_no_idempotency_key=True,
        expires_after_seconds=settings.idempotency_ttl_seconds,
        hash_function="sha256",
    )


def key_data(owner: str | None, session_id: str, turn_id: str) -> dict[str, Any]:
    """The fields :data:`KEY_EXPRESSION` selects, for looking a turn up without its message."""
    return {"owner": owner, "session_id": session_id, "turn_id": turn_id}


def build_persistence_layer(settings: Settings, config: IdempotencyConfig | None = None, *,
                            store: SessionStore | None = None, key_prefix: str = KEY_PREFIX) -> BasePersistenceLayer:
    """The persistence layer for ``settings.session_store``, configured for turn keys.

    Given the session ``store``, a DynamoDB or Redis layer shares its client (one connection pool, the same
    endpoint; a Redis cluster is detected once). Configured here, not only by the decorator on first use, so that
    a reader (the API's status route) hashes keys exactly as the worker does. ``key_prefix`` keeps another
    user of the same records (the API's ``Idempotency-Key``) apart from turns.
    """
    layer = _engine(settings, store)
    layer.configure(config or idempotency_config(settings), key_prefix=key_prefix)
    return layer


def _engine(settings: Settings, store: SessionStore | None) -> BasePersistenceLayer:
    kind = settings.session_store
    if kind == "dynamodb":
        from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

        from clawdbot.sessions.dynamodb import DynamoDBSessionStore
        from clawdbot.sessions.factory import DYNAMODB_PARTITION_KEY, DYNAMODB_SORT_KEY, DYNAMODB_TTL_ATTRIBUTE

        sessions = store if isinstance(store, DynamoDBSessionStore) else None
        return DynamoDBPersistenceLayer(
            table_name=sessions.table_name if sessions else settings.dynamodb_table,
            key_attr=DYNAMODB_PARTITION_KEY, sort_key_attr=DYNAMODB_SORT_KEY, static_pk_value=DYNAMODB_PARTITION,
            expiry_attr=DYNAMODB_TTL_ATTRIBUTE, boto3_client=sessions.client if sessions else None)
    if kind == "redis":
        from aws_lambda_powertools.utilities.idempotency.persistence.cache import CachePersistenceLayer

        from clawdbot.sessions.redis import RedisSessionStore

        if not isinstance(store, RedisSessionStore):
            if not settings.redis_url:
                from clawdbot.exceptions import InvalidRequestError

                raise InvalidRequestError("CLAWDBOT_SESSION_STORE=redis needs CLAWDBOT_REDIS_URL.",
                                          code="missing_redis_url")
            store = RedisSessionStore.from_url(settings.redis_url)  # standalone or cluster, as the server says
        with warnings.catch_warnings():
            # Powertools 3.x: ``CachePersistenceLayer`` (the recommended name) is an alias of the class marked
            # deprecated in favour of it, so constructing it warns; there is nothing to migrate to before 4.0.
            warnings.filterwarnings("ignore", message="RedisCachePersistenceLayer will be removed",
                                    category=DeprecationWarning)
            return CachePersistenceLayer(client=store.client)
    from clawdbot.queue.sqlite_persistence import DB_FILENAME, SQLitePersistenceLayer

    return SQLitePersistenceLayer(settings.data_dir / DB_FILENAME)
