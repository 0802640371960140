"""The session store contract and the logic every engine shares.

Modelled on Powertools' idempotency persistence layer: engines override only the storage primitives
(``_create``, ``_get_meta``, ``_append``, ``_read``, ``_read_recent``, ``_delete``, ``_update_attributes``);
validation, id generation, TTL arithmetic and paging rules live here once.

Invariants every engine must keep (the contract suite in ``tests/`` checks them):

* ``append`` is atomic: the entries of one call get consecutive sequence numbers, never interleaved with
  another call's, and no two calls get the same number, however many race on one session.
* Sequences start at 0 and have no gaps.
* An expired session (``expires_at`` in the past) behaves as if it did not exist.
* Every successful read or append slides ``expires_at`` forward by the configured TTL.
"""

from __future__ import annotations

import secrets
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from clawdbot.exceptions import InvalidRequestError
from clawdbot.sessions.exceptions import SessionListingUnsupportedError, SessionNotFoundError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from clawdbot.sessions.types import EntryPage, NewEntry, SessionMeta, TranscriptEntry

#: Longest session id accepted from clients (ids we generate are 32 chars).
MAX_SESSION_ID_LENGTH = 128
#: Highest sequence number a session reaches (DynamoDB's sort keys hold 12 digits). ``read`` clamps its cursor to
#: it: SQLite cannot bind an integer past 64 bits, Redis refuses one as a score, DynamoDB would compare a longer one
#: as text.
MAX_SEQ = 10**12 - 1
_ID_ALPHABET = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:@")


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """Behaviour settings shared by all engines (storage details go to each engine's constructor)."""

    #: Idle time after which a session expires; ``None`` keeps sessions forever.
    ttl_seconds: int | None = 24 * 3600
    #: Largest page ``read`` returns.
    max_page_size: int = 500


def new_session_id() -> str:
    """An unguessable id (128 bits of randomness)."""
    return "sess_" + secrets.token_hex(16)


def validate_session_id(session_id: str) -> str:
    if not session_id or len(session_id) > MAX_SESSION_ID_LENGTH or not set(session_id) <= _ID_ALPHABET:
        raise InvalidRequestError(
            f"Invalid session id: use 1-{MAX_SESSION_ID_LENGTH} characters from [A-Za-z0-9-_.:@].",
            param="session_id",
            code="invalid_session_id",
        )
    return session_id


class SessionStore(ABC):
    """A transcript store. Thread-safe; every method may be called concurrently."""

    def __init__(self, config: StoreConfig | None = None) -> None:
        self.config = config or StoreConfig()

    # ----------------------------------------------------------------- public API (shared logic)
    def create(self, session_id: str | None = None, *, owner: str | None = None,
               attributes: dict[str, Any] | None = None) -> SessionMeta:
        """Create a session; raises ``SessionExistsError`` if the id is taken (and not expired)."""
        sid = validate_session_id(session_id) if session_id else new_session_id()
        now = time.time()
        return self._create(sid, owner, dict(attributes or {}), now, self._expiry(now))

    def get(self, session_id: str) -> SessionMeta:
        meta = self.get_optional(session_id)
        if meta is None:
            raise SessionNotFoundError(f"No session with id '{session_id}'.", param="session_id")
        return meta

    def get_optional(self, session_id: str) -> SessionMeta | None:
        validate_session_id(session_id)
        meta = self._get_meta(session_id)
        if meta is None or self._expired(meta):
            return None
        return meta

    def append(self, session_id: str, entries: Sequence[NewEntry], *, create: bool = False,
               owner: str | None = None) -> list[TranscriptEntry]:
        """Atomically append ``entries`` with consecutive sequence numbers; returns them as stored.

        With ``create=True`` a missing session is created first (the first turn of a client-named session).
        """
        validate_session_id(session_id)
        if not entries:
            return []
        now = time.time()
        return self._append(session_id, list(entries), now, self._expiry(now), create, owner)

    def read(self, session_id: str, *, after: int | None = None, limit: int = 100) -> EntryPage:
        """Entries with ``seq > after`` (all when ``after`` is None), oldest first, at most ``limit``."""
        self.get(session_id)
        limit = max(1, min(limit, self.config.max_page_size))
        if after is not None:  # any integer a client sends: past MAX_SEQ means "nothing", not an engine error
            after = min(after, MAX_SEQ)
        return self._read(session_id, after, limit)

    def read_recent(self, session_id: str, limit: int) -> list[TranscriptEntry]:
        """The newest ``limit`` entries, oldest first: the window a context is built from.

        Cost is O(limit), independent of how long the transcript is.
        """
        validate_session_id(session_id)
        if limit <= 0:
            return []
        return self._read_recent(session_id, limit)

    def delete(self, session_id: str) -> bool:
        """Delete the session and its entries; False if there was none."""
        validate_session_id(session_id)
        return self._delete(session_id)

    def update_attributes(self, session_id: str, attributes: dict[str, Any]) -> SessionMeta:
        """Merge ``attributes`` into the session metadata."""
        self.get(session_id)
        return self._update_attributes(session_id, dict(attributes), time.time())

    def list_owned(self, owner: str | None, *, limit: int = 50) -> list[SessionMeta]:
        """Live sessions of ``owner`` (``None``: the open server's), most recently updated first.

        Listing is not use: no expiry slides. Engines without an owner index raise
        ``SessionListingUnsupportedError`` instead of scanning every session.
        """
        now = time.time()
        limit = max(1, min(limit, self.config.max_page_size))
        return [m for m in self._list_owned(owner, limit, now) if not self._expired(m, now)]

    def prime(self) -> None:  # noqa: B027 - optional hook
        """Make now what the first call would make on demand (clients): a SnapStart init calls it, so the
        snapshot holds it and a restored environment's first request does not pay for it. A no-op by default."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    # ----------------------------------------------------------------- helpers for engines
    def _expiry(self, now: float) -> int | None:
        ttl = self.config.ttl_seconds
        return None if ttl is None else int(now) + ttl

    @staticmethod
    def _expired(meta: SessionMeta, now: float | None = None) -> bool:
        return meta.expires_at is not None and meta.expires_at <= (now or time.time())

    # ----------------------------------------------------------------- engine primitives
    @abstractmethod
    def _create(self, session_id: str, owner: str | None, attributes: dict[str, Any], now: float,
                expires_at: int | None) -> SessionMeta:
        """Insert the metadata record; raise ``SessionExistsError`` if a live one exists
        (an expired one is replaced, its entries removed)."""

    @abstractmethod
    def _get_meta(self, session_id: str) -> SessionMeta | None:
        """The metadata record, expired or not (the base class filters expiry)."""

    @abstractmethod
    def _append(self, session_id: str, entries: list[NewEntry], now: float, expires_at: int | None,
                create: bool, owner: str | None) -> list[TranscriptEntry]:
        """Atomic append (see class docstring); raise ``SessionNotFoundError`` if missing and not ``create``.
        Bumps ``updated_at``/``expires_at``. An expired session counts as missing."""

    @abstractmethod
    def _read(self, session_id: str, after: int | None, limit: int) -> EntryPage: ...

    @abstractmethod
    def _read_recent(self, session_id: str, limit: int) -> list[TranscriptEntry]:
        """Newest ``limit`` entries in ascending order; [] for a missing/expired session."""

    @abstractmethod
    def _delete(self, session_id: str) -> bool: ...

    def _list_owned(self, owner: str | None, limit: int, now: float) -> list[SessionMeta]:
        """Up to ``limit`` sessions of ``owner`` not expired at ``now``, newest ``updated_at`` first (optional)."""
        raise SessionListingUnsupportedError(
            f"{type(self).__name__} cannot list sessions by owner; open a session by its id.")

    @abstractmethod
    def _update_attributes(self, session_id: str, attributes: dict[str, Any], now: float) -> SessionMeta: ...
