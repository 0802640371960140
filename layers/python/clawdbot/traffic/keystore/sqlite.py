"""Keys in ``<data_dir>/keys.sqlite3``: the embedded default, beside the SQLite session store.

The file is created by the first ``keys create``; until then reads answer "no keys" without creating anything,
so building an app (or a test's) never litters a data directory.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

from clawdbot.traffic.keys import ApiKey
from clawdbot.traffic.keystore.base import KeyStore

DB_FILENAME = "keys.sqlite3"
_SCHEMA = "CREATE TABLE IF NOT EXISTS api_keys (key_hash TEXT PRIMARY KEY, record TEXT NOT NULL)"


class SQLiteKeyStore(KeyStore):
    def __init__(self, data_dir: str | Path, *, filename: str = DB_FILENAME) -> None:
        self.path = Path(data_dir) / filename
        self._lock = threading.Lock()  # one short statement at a time; keys are read rarely (cached)

    def _connect(self, create: bool) -> sqlite3.Connection | None:
        if not create and not self.path.exists():
            return None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        conn.execute(_SCHEMA)
        return conn

    def _insert(self, record: ApiKey) -> bool:
        with self._lock:
            conn = self._connect(create=True)
            assert conn is not None
            try:
                cur = conn.execute("INSERT OR IGNORE INTO api_keys (key_hash, record) VALUES (?, ?)",
                                   (record.key_hash, json.dumps(record.to_dict())))
                return cur.rowcount == 1
            finally:
                conn.close()

    def _get(self, key_hash: str) -> ApiKey | None:
        with self._lock:
            conn = self._connect(create=False)
            if conn is None:
                return None
            try:
                row = conn.execute("SELECT record FROM api_keys WHERE key_hash = ?", (key_hash,)).fetchone()
            finally:
                conn.close()
        return None if row is None else ApiKey.from_dict(json.loads(row[0]))

    def _put(self, record: ApiKey) -> None:
        with self._lock:
            conn = self._connect(create=True)
            assert conn is not None
            try:
                conn.execute("INSERT OR REPLACE INTO api_keys (key_hash, record) VALUES (?, ?)",
                             (record.key_hash, json.dumps(record.to_dict())))
            finally:
                conn.close()

    def _list(self) -> list[ApiKey]:
        with self._lock:
            conn = self._connect(create=False)
            if conn is None:
                return []
            try:
                rows = conn.execute("SELECT record FROM api_keys").fetchall()
            finally:
                conn.close()
        return [ApiKey.from_dict(json.loads(r[0])) for r in rows]
