"""The key store contract, run once per engine (SQLite, Redis, DynamoDB Local)."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import pytest

from clawdbot.exceptions import InvalidRequestError
from clawdbot.traffic.exceptions import KeyNotFoundError
from clawdbot.traffic.keys import KEY_PREFIX, TIERS, Limits, hash_key
from clawdbot.traffic.keystore.base import resolve_limits

if TYPE_CHECKING:
    from clawdbot.traffic.keystore.base import KeyStore


def test_a_new_key_authenticates_and_others_do_not(key_store: KeyStore) -> None:
    record, plaintext = key_store.create("alice", limits=Limits(requests_per_minute=5))
    assert plaintext.startswith(KEY_PREFIX) and len(plaintext) >= 40
    found = key_store.authenticate(plaintext)
    assert found is not None
    assert (found.key_id, found.name, found.limits) == (record.key_id, "alice", Limits(requests_per_minute=5))
    assert key_store.authenticate(plaintext + "x") is None
    assert key_store.authenticate(plaintext[:-1]) is None
    assert key_store.authenticate("") is None


def test_only_the_hash_is_stored(key_store: KeyStore) -> None:
    record, plaintext = key_store.create("bob")
    assert record.key_hash == hashlib.sha256(plaintext.encode()).hexdigest()
    stored = [k.to_dict() for k in key_store.list()]
    assert plaintext not in repr(stored)
    assert record.display.startswith(plaintext[:8]) and plaintext not in record.display


def test_a_store_has_keys_from_the_first_one_on_even_once_all_are_revoked(key_store: KeyStore) -> None:
    assert not key_store.has_keys()
    assert key_store.list() == []
    record, plaintext = key_store.create("carol")
    assert key_store.has_keys()
    key_store.revoke(record.key_id)
    assert key_store.has_keys()
    assert key_store.authenticate(plaintext) is None
    assert key_store.list() == []
    [kept] = key_store.list(include_revoked=True)
    assert kept.key_id == record.key_id and kept.revoked_at is not None


def test_revoke_by_name_needs_a_unique_active_name(key_store: KeyStore) -> None:
    first, _ = key_store.create("team")
    second, second_key = key_store.create("team")
    with pytest.raises(InvalidRequestError):
        key_store.revoke("team")
    key_store.revoke(first.key_id)
    assert key_store.revoke("team").key_id == second.key_id  # now the only active one
    assert key_store.authenticate(second_key) is None
    with pytest.raises(KeyNotFoundError):
        key_store.revoke("nobody")


def test_list_is_ordered_by_creation(key_store: KeyStore) -> None:
    names = [f"k{i}" for i in range(4)]
    for name in names:
        key_store.create(name)
    assert [k.name for k in key_store.list()] == names


def test_import_hash_is_idempotent_and_a_revoked_import_stays_revoked(key_store: KeyStore) -> None:
    plaintext = "deploy-key-chosen-by-the-operator"
    first = key_store.import_hash(hash_key(plaintext), name="deploy")
    again = key_store.import_hash(hash_key(plaintext).upper(), name="deploy")
    assert again.key_id == first.key_id
    assert key_store.authenticate(plaintext) is not None
    key_store.revoke(first.key_id)
    assert not key_store.import_hash(hash_key(plaintext), name="deploy").active  # a cold start does not undo it
    assert key_store.authenticate(plaintext) is None
    with pytest.raises(InvalidRequestError):
        key_store.import_hash("not-a-hash", name="x")


def test_tiers_and_explicit_limits() -> None:
    assert resolve_limits("free") == TIERS["free"]
    limits = resolve_limits("free", requests_per_minute=7, daily_tokens=0)
    assert limits == Limits(requests_per_minute=7, tokens_per_minute=TIERS["free"].tokens_per_minute,
                            daily_tokens=None)
    assert resolve_limits("unlimited").unlimited
    with pytest.raises(InvalidRequestError):
        resolve_limits("gold")
    with pytest.raises(InvalidRequestError):
        resolve_limits("free", tokens_per_minute=-1)


@pytest.mark.parametrize("bad", ["", "   ", "x" * 129, "tab\there"])
def test_bad_names_are_refused(key_store: KeyStore, bad: str) -> None:
    with pytest.raises(InvalidRequestError):
        key_store.create(bad)
