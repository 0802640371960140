"""The key store contract and the logic every engine shares.

Engines override only four storage primitives (``_insert``, ``_get``, ``_put``, ``_list``); creating,
authenticating, revoking and the deploy-key import live here once. Lookups go by the key's SHA-256, the only
form stored.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from dataclasses import replace
from typing import TYPE_CHECKING

from clawdbot.exceptions import ConflictError, InvalidRequestError
from clawdbot.traffic.exceptions import KeyNotFoundError
from clawdbot.traffic.keys import (
    DEFAULT_TIER,
    TIERS,
    ApiKey,
    Limits,
    hash_key,
    hashes_match,
    looks_like_sha256,
    new_api_key,
    new_key_id,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

logger = logging.getLogger(__name__)

MAX_NAME_LENGTH = 128


def resolve_limits(tier: str, requests_per_minute: int | None = None, tokens_per_minute: int | None = None,
                   daily_tokens: int | None = None) -> Limits:
    """The tier's preset with any explicit value overriding it (0 means unlimited on that axis)."""
    if tier not in TIERS:
        raise InvalidRequestError(f"Unknown tier '{tier}': choose one of {', '.join(TIERS)}.", param="tier")
    base = TIERS[tier]

    def pick(explicit: int | None, preset: int | None) -> int | None:
        if explicit is None:
            return preset
        if explicit < 0:
            raise InvalidRequestError("Limits must be positive (0 means unlimited).")
        return explicit or None

    return Limits(pick(requests_per_minute, base.requests_per_minute),
                  pick(tokens_per_minute, base.tokens_per_minute), pick(daily_tokens, base.daily_tokens))


class KeyStore(ABC):
    """API key records, by hash. Thread-safe."""

    # ----------------------------------------------------------------- public API (shared logic)
    def create(self, name: str, *, tier: str = DEFAULT_TIER, limits: Limits | None = None,
               plaintext: str | None = None) -> tuple[ApiKey, str]:
        """Store a new key and return its record and plaintext (the only time the plaintext exists)."""
        name = _valid_name(name)
        record, plaintext = new_api_key(name, tier, limits if limits is not None else resolve_limits(tier),
                                        plaintext)
        if not self._insert(record):
            raise ConflictError("That key already exists.", code="api_key_exists")
        logger.debug("created API key %s (%s)", record.key_id, name)
        return record, plaintext

    def import_hash(self, key_hash: str, *, name: str, tier: str = DEFAULT_TIER,
                    limits: Limits | None = None) -> ApiKey:
        """Ensure a key whose plaintext we never see (the deploy's key, given as its SHA-256) exists.

        Idempotent: every cold start may call it; an existing record, even a revoked one, is returned unchanged,
        so revoking the deploy key sticks.
        """
        key_hash = key_hash.strip().lower()
        if not looks_like_sha256(key_hash):
            raise InvalidRequestError("A key hash is 64 lowercase hex characters (SHA-256).", param="key_hash")
        existing = self._get(key_hash)
        if existing is not None:
            return existing
        record = ApiKey(key_id=new_key_id(), key_hash=key_hash, name=_valid_name(name), tier=tier,
                        limits=limits if limits is not None else resolve_limits(tier), created_at=time.time(),
                        display="(imported)")
        if not self._insert(record):  # another cold start won the race
            return self._get(key_hash) or record
        return record

    def authenticate(self, plaintext: str) -> ApiKey | None:
        """The active key with this plaintext, or ``None``."""
        presented = hash_key(plaintext)
        record = self._get(presented)
        if record is None or not hashes_match(record.key_hash, presented) or not record.active:
            return None
        return record

    def list(self, *, include_revoked: bool = False) -> list[ApiKey]:
        keys = sorted(self._list(), key=lambda k: k.created_at)
        return keys if include_revoked else [k for k in keys if k.active]

    def has_keys(self) -> bool:
        """Whether any key was ever created: a local server is open until then, and revoking every key
        afterwards does not reopen it (revoking a leaked last key must lock the door, not open it)."""
        return bool(self._list())

    def find(self, id_or_name: str) -> ApiKey:
        """The key with this id, else the one active key with this name."""
        keys = self._list()
        by_id = [k for k in keys if k.key_id == id_or_name]
        if by_id:
            return by_id[0]
        by_name = [k for k in keys if k.name == id_or_name and k.active]
        if len(by_name) == 1:
            return by_name[0]
        if by_name:
            raise InvalidRequestError(f"Several active keys are named '{id_or_name}': give the key id.")
        raise KeyNotFoundError(f"No API key with id or name '{id_or_name}'.")

    def revoke(self, id_or_name: str) -> ApiKey:
        """Mark a key revoked (kept for the record); revoking twice is harmless."""
        record = self.find(id_or_name)
        if not record.active:
            return record
        revoked = replace(record, revoked_at=time.time())
        self._put(revoked)
        logger.debug("revoked API key %s", record.key_id)
        return revoked

    def prime(self) -> None:  # noqa: B027 - optional hook
        """Make now what the first call would make on demand (clients): a SnapStart init calls it, so the
        snapshot holds it and a restored environment's first request does not pay for it. A no-op by default."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    # ----------------------------------------------------------------- engine primitives
    @abstractmethod
    def _insert(self, record: ApiKey) -> bool:
        """Store a record unless one with the same hash exists (atomically); False if it did."""

    @abstractmethod
    def _get(self, key_hash: str) -> ApiKey | None:
        """The record with this hash, revoked or not."""

    @abstractmethod
    def _put(self, record: ApiKey) -> None:
        """Overwrite the record with this hash."""

    @abstractmethod
    def _list(self) -> Sequence[ApiKey]:
        """Every record, revoked ones included."""


def _valid_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > MAX_NAME_LENGTH or not name.isprintable():
        raise InvalidRequestError(f"A key name is 1-{MAX_NAME_LENGTH} printable characters.", param="name")
    return name
