"""The ``store`` fixture, parametrized over every engine: the contract suite runs once per engine.

Server-backed engines get their server from the session-scoped fixtures in ``tests.fixtures.servers``; those are
requested lazily, so running only the SQLite cases starts no server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from clawdbot.sessions.base import SessionStore, StoreConfig

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

#: Every engine the contract suite must pass.
ENGINES = ("sqlite", "dynamodb", "redis", "redis-cluster")



def _sqlite(request: pytest.FixtureRequest, tmp_path: Path, config: StoreConfig | None) -> SessionStore:
    from clawdbot.sessions.sqlite import SQLiteSessionStore

    return SQLiteSessionStore(tmp_path / "data", config)


def _dynamodb(request: pytest.FixtureRequest, tmp_path: Path, config: StoreConfig | None) -> SessionStore:
    from clawdbot.sessions.dynamodb import DynamoDBSessionStore

    client, table = request.getfixturevalue("dynamodb_table")
    return DynamoDBSessionStore(table, config, client=client)


def _redis(request: pytest.FixtureRequest, tmp_path: Path, config: StoreConfig | None) -> SessionStore:
    from clawdbot.sessions.redis import RedisSessionStore

    store = RedisSessionStore.from_url(request.getfixturevalue("redis_server"), config)
    assert type(store.client).__name__ == "Redis"
    return store


def _redis_cluster(request: pytest.FixtureRequest, tmp_path: Path, config: StoreConfig | None) -> SessionStore:
    from clawdbot.sessions.redis import RedisSessionStore

    store = RedisSessionStore.from_url(request.getfixturevalue("redis_cluster_server"), config)
    assert type(store.client).__name__ == "RedisCluster"  # detected from the server, not told
    return store


_BUILDERS = {"sqlite": _sqlite, "dynamodb": _dynamodb, "redis": _redis, "redis-cluster": _redis_cluster}


@pytest.fixture(scope="session")
def dynamodb_client(dynamodb_local: str) -> Any:
    """A boto3 client for DynamoDB Local (fake credentials come with the ``dynamodb_local`` fixture)."""
    import boto3
    from botocore.config import Config

    return boto3.client("dynamodb", endpoint_url=dynamodb_local,
                        config=Config(max_pool_connections=64, retries={"mode": "standard"}))


@pytest.fixture(scope="session")
def dynamodb_table(dynamodb_client: Any) -> tuple[Any, str]:
    """One sessions table with the stack's schema, shared by the suite (session ids never collide)."""
    from clawdbot.sessions.factory import ensure_dynamodb_table

    assert ensure_dynamodb_table(dynamodb_client, "clawdbot-sessions-test") is True
    return dynamodb_client, "clawdbot-sessions-test"


@pytest.fixture(params=ENGINES)
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., SessionStore]]:
    """Build stores of the parametrized engine (with any ``StoreConfig``); all are closed after the test."""
    built: list[SessionStore] = []

    def make(config: StoreConfig | None = None) -> SessionStore:
        store = _BUILDERS[request.param](request, tmp_path, config)
        built.append(store)
        return store

    yield make
    for store in built:
        store.close()


@pytest.fixture
def store(make_store: Callable[..., SessionStore]) -> SessionStore:
    return make_store(StoreConfig())
