"""The embedded session store: one SQLite file in the data directory, in WAL mode.

The layout mirrors the DynamoDB table so the engines behave alike: one ``sessions`` row per session (the META
item) holding ``next_seq``, and one ``entries`` row per transcript entry keyed by ``(session_id, seq)``.

Concurrency: WAL lets readers run alongside the one writer; every append runs in ``BEGIN IMMEDIATE``, which takes
the write lock *before* reading ``next_seq``, so two racing turns (threads or processes) serialize instead of
reading the same sequence. Threads of one process queue on a Python lock before ``BEGIN IMMEDIATE``: SQLite's
busy handler polls with sleeps of up to 100 ms, so 64 threads contending on the file lock made most turns wait
on sleeps rather than on the (sub-millisecond) transactions ahead of them. ``busy_timeout`` still makes a writer
blocked by another process wait rather than fail. Connections come from a
small pool (one per concurrent caller, reused across threads) because a sqlite3 connection must not be used by
two threads at once.
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clawdbot.sessions.base import SessionStore, StoreConfig
from clawdbot.sessions.exceptions import SessionExistsError, SessionNotFoundError
from clawdbot.sessions.types import EntryPage, SessionMeta, TranscriptEntry

if TYPE_CHECKING:
    from collections.abc import Iterator

    from clawdbot.sessions.types import NewEntry

logger = logging.getLogger(__name__)

#: File name inside the data directory.
DB_FILENAME = "sessions.sqlite3"
#: How long a writer waits for the lock held by another writer before SQLite gives up (milliseconds).
BUSY_TIMEOUT_MS = 30_000
#: Expired sessions are hidden at once but deleted from disk by a sweep at most this often (and at open).
PURGE_INTERVAL_S = 3600.0
#: A context read slides the expiry only if it slid longer ago than this (at most a tenth of the TTL): with a day's
#: TTL a session then expires between 23:59 and 24:00 after its last use, and most reads write nothing.
TOUCH_SLACK_S = 60

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    session_id  TEXT PRIMARY KEY,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL,
    next_seq    INTEGER NOT NULL DEFAULT 0,
    owner       TEXT,
    expires_at  INTEGER,
    attributes  TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS sessions_expiry ON sessions (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS sessions_owner ON sessions (owner, updated_at);
CREATE TABLE IF NOT EXISTS entries (
    session_id  TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    role        TEXT NOT NULL,
    content     TEXT NOT NULL,
    created_at  REAL NOT NULL,
    turn_id     TEXT,
    attributes  TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (session_id, seq)
);
"""

_META_COLUMNS = "session_id, created_at, updated_at, next_seq, owner, expires_at, attributes"
_ENTRY_COLUMNS = "seq, role, content, created_at, turn_id, attributes"


def _dumps(value: dict[str, Any]) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _meta(row: tuple[Any, ...]) -> SessionMeta:
    sid, created_at, updated_at, next_seq, owner, expires_at, attributes = row
    return SessionMeta(session_id=sid, created_at=created_at, updated_at=updated_at, next_seq=next_seq,
                       owner=owner, expires_at=expires_at, attributes=json.loads(attributes))


def _entry(row: tuple[Any, ...]) -> TranscriptEntry:
    seq, role, content, created_at, turn_id, attributes = row
    return TranscriptEntry(seq=seq, role=role, content=content, created_at=created_at, turn_id=turn_id,
                           attributes=json.loads(attributes))


class SQLiteSessionStore(SessionStore):
    """Sessions in ``<data_dir>/sessions.sqlite3`` (the directory is created if missing)."""

    def __init__(self, data_dir: str | Path, config: StoreConfig | None = None, *,
                 filename: str = DB_FILENAME) -> None:
        super().__init__(config)
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.data_dir / filename
        self._idle: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        #: Serializes this process's write transactions (see the module docstring).
        self._write_lock = threading.Lock()
        self._closed = False
        self._next_purge = 0.0
        with self._connection() as conn:
            conn.executescript(_SCHEMA)
        self._maybe_purge()
        logger.debug("SQLite session store at %s", self.path)

    # ----------------------------------------------------------------- connections
    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN ourselves, so the write lock is taken exactly when we say.
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                               timeout=BUSY_TIMEOUT_MS / 1000)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        # NORMAL is durable across application crashes in WAL mode; only an OS crash may lose the last commits.
        conn.execute("PRAGMA synchronous = NORMAL")
        with self._all_lock:
            self._all.append(conn)
        return conn

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        if self._closed:
            raise RuntimeError("The session store is closed.")
        try:
            conn = self._idle.get_nowait()
        except queue.Empty:
            conn = self._connect()
        try:
            yield conn
        finally:
            self._idle.put(conn)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction holding the database's write lock from its first statement."""
        with self._write_lock, self._connection() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # never hand a connection back to the pool mid-transaction
                    conn.execute("ROLLBACK")
                raise

    def close(self) -> None:
        self._closed = True
        with self._all_lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()

    # ----------------------------------------------------------------- expiry sweep
    def purge_expired(self, now: float | None = None) -> int:
        """Delete sessions (and their entries) whose ``expires_at`` has passed; returns how many.

        DynamoDB and Redis delete expired data themselves; an embedded file needs this sweep, or it would keep
        every abandoned conversation forever.
        """
        now = time.time() if now is None else now
        with self._write() as conn:
            conn.execute("DELETE FROM entries WHERE session_id IN "
                         "(SELECT session_id FROM sessions WHERE expires_at IS NOT NULL AND expires_at <= ?)", (now,))
            removed = conn.execute("DELETE FROM sessions WHERE expires_at IS NOT NULL AND expires_at <= ?",
                                   (now,)).rowcount
        logger.debug("purged %d expired sessions from %s", removed, self.path)
        return removed

    def _maybe_purge(self) -> None:
        now = time.monotonic()
        if now < self._next_purge:
            return
        self._next_purge = now + PURGE_INTERVAL_S
        self.purge_expired()

    # ----------------------------------------------------------------- helpers
    @staticmethod
    def _select_meta(conn: sqlite3.Connection, session_id: str) -> SessionMeta | None:
        row = conn.execute(f"SELECT {_META_COLUMNS} FROM sessions WHERE session_id = ?", (session_id,)).fetchone()
        return None if row is None else _meta(row)

    @staticmethod
    def _insert_meta(conn: sqlite3.Connection, meta: SessionMeta) -> None:
        """Insert (or replace an expired) metadata row; an expired session's entries go with it."""
        conn.execute("DELETE FROM entries WHERE session_id = ?", (meta.session_id,))
        conn.execute(
            f"INSERT OR REPLACE INTO sessions ({_META_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (meta.session_id, meta.created_at, meta.updated_at, meta.next_seq, meta.owner, meta.expires_at,
             _dumps(meta.attributes)),
        )

    def _touch(self, conn: sqlite3.Connection, session_id: str) -> None:
        """Slide a live session's expiry forward (a read counts as use)."""
        if self.config.ttl_seconds is None:
            return
        now = time.time()
        conn.execute("UPDATE sessions SET expires_at = ? WHERE session_id = ? AND expires_at > ?",
                     (self._expiry(now), session_id, now))

    # ----------------------------------------------------------------- engine primitives
    def _create(self, session_id: str, owner: str | None, attributes: dict[str, Any], now: float,
                expires_at: int | None) -> SessionMeta:
        meta = SessionMeta(session_id=session_id, created_at=now, updated_at=now, next_seq=0, owner=owner,
                           expires_at=expires_at, attributes=attributes)
        with self._write() as conn:
            existing = self._select_meta(conn, session_id)
            if existing is not None and not self._expired(existing, now):
                raise SessionExistsError(f"Session '{session_id}' already exists.", param="session_id")
            self._insert_meta(conn, meta)
        return meta

    def _get_meta(self, session_id: str) -> SessionMeta | None:
        with self._connection() as conn:
            return self._select_meta(conn, session_id)

    def _append(self, session_id: str, entries: list[NewEntry], now: float, expires_at: int | None,
                create: bool, owner: str | None) -> list[TranscriptEntry]:
        self._maybe_purge()
        with self._write() as conn:
            meta = self._select_meta(conn, session_id)
            if meta is None or self._expired(meta, now):
                if not create:
                    raise SessionNotFoundError(f"No session with id '{session_id}'.", param="session_id")
                meta = SessionMeta(session_id=session_id, created_at=now, updated_at=now, owner=owner,
                                   expires_at=expires_at)
                self._insert_meta(conn, meta)
            stored = [
                TranscriptEntry(seq=meta.next_seq + i, role=e.role, content=e.content, created_at=now,
                                turn_id=e.turn_id, attributes=dict(e.attributes))
                for i, e in enumerate(entries)
            ]
            conn.executemany(
                f"INSERT INTO entries (session_id, {_ENTRY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(session_id, e.seq, e.role, e.content, e.created_at, e.turn_id, _dumps(e.attributes))
                 for e in stored],
            )
            conn.execute("UPDATE sessions SET next_seq = ?, updated_at = ?, expires_at = ? WHERE session_id = ?",
                         (meta.next_seq + len(stored), now, expires_at, session_id))
        return stored

    def _read(self, session_id: str, after: int | None, limit: int) -> EntryPage:
        with self._write() as conn:
            rows = conn.execute(
                f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE session_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                (session_id, -1 if after is None else after, limit + 1),
            ).fetchall()
            self._touch(conn, session_id)
        page = [_entry(r) for r in rows[:limit]]
        return EntryPage(entries=page, next_after=page[-1].seq if len(rows) > limit else None)

    def _read_recent(self, session_id: str, limit: int) -> list[TranscriptEntry]:
        """The context window: read in a snapshot that takes no write lock, then slide the expiry in a write
        of its own only if it has not slid in the last ``TOUCH_SLACK_S`` (every chat turn reads, then appends,
        which slides it anyway; bench.overhead showed turns queueing on the write lock for these touches)."""
        with self._connection() as conn:
            conn.execute("BEGIN")  # deferred: one consistent snapshot of META and the entries, no lock taken
            try:
                meta = self._select_meta(conn, session_id)
                if meta is None or self._expired(meta):
                    return []
                rows = conn.execute(
                    f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE session_id = ? ORDER BY seq DESC LIMIT ?",
                    (session_id, limit),
                ).fetchall()
            finally:
                conn.execute("COMMIT")
        ttl = self.config.ttl_seconds
        if ttl is not None and meta.expires_at is not None and \
                meta.expires_at < self._expiry(time.time()) - min(TOUCH_SLACK_S, ttl // 10):  # type: ignore[operator]
            with self._write() as conn:
                self._touch(conn, session_id)
        return [_entry(r) for r in reversed(rows)]

    def _delete(self, session_id: str) -> bool:
        with self._write() as conn:
            meta = self._select_meta(conn, session_id)
            conn.execute("DELETE FROM entries WHERE session_id = ?", (session_id,))
            conn.execute("DELETE FROM sessions WHERE session_id = ?", (session_id,))
        return meta is not None and not self._expired(meta)

    def _list_owned(self, owner: str | None, limit: int, now: float) -> list[SessionMeta]:
        with self._connection() as conn:  # ``IS`` matches NULL too and still uses the owner index
            rows = conn.execute(
                f"SELECT {_META_COLUMNS} FROM sessions WHERE owner IS ? AND (expires_at IS NULL OR expires_at > ?) "
                "ORDER BY updated_at DESC LIMIT ?", (owner, now, limit)).fetchall()
        return [_meta(r) for r in rows]

    def _update_attributes(self, session_id: str, attributes: dict[str, Any], now: float) -> SessionMeta:
        with self._write() as conn:
            meta = self._select_meta(conn, session_id)
            if meta is None or self._expired(meta, now):
                raise SessionNotFoundError(f"No session with id '{session_id}'.", param="session_id")
            merged = {**meta.attributes, **attributes}
            conn.execute("UPDATE sessions SET attributes = ?, updated_at = ? WHERE session_id = ?",
                         (_dumps(merged), now, session_id))
        return SessionMeta(session_id=session_id, created_at=meta.created_at, updated_at=now,
                           next_seq=meta.next_seq, owner=meta.owner, expires_at=meta.expires_at, attributes=merged)
