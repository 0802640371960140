"""Redis-specific behaviour: hash-tagged keys (cluster mode), key TTLs that follow the session, TLS + AUTH,
error mapping."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest
import redis
from redis.cluster import RedisCluster

from clawdbot.config.settings import Settings
from clawdbot.exceptions import ClawdbotError
from clawdbot.sessions import NewEntry
from clawdbot.sessions.base import StoreConfig
from clawdbot.sessions.exceptions import StoreUnavailableError
from clawdbot.sessions.factory import build_store
from clawdbot.sessions.redis import RedisSessionStore
from tests.fixtures.servers import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator


def turn(i: int) -> list[NewEntry]:
    return [NewEntry("user", f"q{i}", turn_id=f"t{i}"), NewEntry("assistant", f"a{i}", turn_id=f"t{i}")]


@pytest.fixture
def raw(redis_server: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server, decode_responses=True)
    yield client
    client.close()


def test_keys_share_the_session_hash_tag(redis_cluster_server: str) -> None:
    store = RedisSessionStore.from_url(redis_cluster_server, key_prefix="cb:")
    store.append("tagged-1", turn(0), create=True)

    admin = RedisCluster.from_url(redis_cluster_server, decode_responses=True)
    keys = sorted(admin.scan_iter(match="cb:*"))
    slots = {admin.keyslot(k) for k in keys}

    assert keys == ["cb:{tagged-1}:log", "cb:{tagged-1}:meta"]
    assert slots == {admin.keyslot("tagged-1")}  # the slot is the session id's, whatever the prefix
    admin.close()
    store.close()


def test_a_prefix_that_would_break_the_hash_tag_is_refused(redis_server: str) -> None:
    with pytest.raises(ValueError, match="braces"):
        RedisSessionStore.from_url(redis_server, key_prefix="app{x}:")


def test_key_ttl_follows_the_session_expiry_and_slides_on_use(redis_server: str, raw: redis.Redis) -> None:
    # GIVEN a session written by a store with a 1 h TTL
    short = RedisSessionStore.from_url(redis_server, StoreConfig(ttl_seconds=3600))
    short.append("ttl-1", turn(0), create=True)
    meta_key, log_key = "clawdbot:{ttl-1}:meta", "clawdbot:{ttl-1}:log"
    first = short.get("ttl-1").expires_at
    assert first is not None

    # THEN Redis drops both keys exactly when the session expires
    assert raw.pexpiretime(meta_key) == raw.pexpiretime(log_key) == first * 1000

    # WHEN it is read through a store with a 2 h TTL, both keys' expiry moves with it
    long_ = RedisSessionStore.from_url(redis_server, StoreConfig(ttl_seconds=7200))
    assert len(long_.read_recent("ttl-1", 10)) == 2
    second = long_.get("ttl-1").expires_at
    assert second is not None and second >= first + 3600
    assert raw.pexpiretime(meta_key) == raw.pexpiretime(log_key) == second * 1000
    short.close()
    long_.close()


def test_no_ttl_means_persistent_keys(redis_server: str, raw: redis.Redis) -> None:
    store = RedisSessionStore.from_url(redis_server, StoreConfig(ttl_seconds=None))

    store.append("forever-1", turn(0), create=True)

    assert raw.ttl("clawdbot:{forever-1}:meta") == raw.ttl("clawdbot:{forever-1}:log") == -1
    store.close()


def test_redis_expiry_and_store_agree(redis_server: str, raw: redis.Redis) -> None:
    store = RedisSessionStore.from_url(redis_server, StoreConfig(ttl_seconds=1))
    store.append("gone-1", turn(0), create=True)

    time.sleep(2.1)

    assert raw.exists("clawdbot:{gone-1}:meta", "clawdbot:{gone-1}:log") == 0  # Redis itself forgot it
    assert store.get_optional("gone-1") is None
    store.close()


def test_a_log_out_of_step_with_its_sequence_is_refused(redis_server: str, raw: redis.Redis) -> None:
    # GIVEN a session whose list was written behind the store's back
    store = RedisSessionStore.from_url(redis_server)
    store.append("tampered-1", turn(0), create=True)
    raw.rpush("clawdbot:{tampered-1}:log", '{"r":"user","c":"injected","t":0}')

    # THEN the store refuses to append rather than hand out sequences that no longer match list positions
    with pytest.raises(redis.exceptions.ResponseError, match="next_seq"):
        store.append("tampered-1", turn(1))
    store.close()


def test_tls_with_password_like_elasticache(redis_tls_server: str) -> None:
    store = RedisSessionStore.from_url(redis_tls_server)

    store.append("tls-1", turn(0), create=True)

    assert [e.content for e in store.read_recent("tls-1", 5)] == ["q0", "a0"]
    store.close()
    wrong = redis_tls_server.replace("test-only-password", "wrong")
    with pytest.raises(StoreUnavailableError):  # AUTH failure: a misconfigured store, never a crash
        RedisSessionStore.from_url(wrong)


def test_unreachable_server_is_store_unavailable() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"

    with pytest.raises(StoreUnavailableError) as probing:
        RedisSessionStore.from_url(url)
    store = RedisSessionStore.from_url(url, cluster=False)
    with pytest.raises(StoreUnavailableError) as using:
        store.append("s", turn(0), create=True)

    assert probing.value.status_code == using.value.status_code == 503


def test_factory_builds_redis_from_settings(redis_server: str) -> None:
    store = build_store(Settings(session_store="redis", redis_url=redis_server))

    assert isinstance(store, RedisSessionStore)
    store.append("factory-1", turn(0), create=True)
    assert store.get("factory-1").next_seq == 2
    store.close()
    with pytest.raises(ClawdbotError, match="CLAWDBOT_REDIS_URL"):
        build_store(Settings(session_store="redis", redis_url=None))
