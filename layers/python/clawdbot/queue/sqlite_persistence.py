"""A Powertools idempotency persistence layer on SQLite, for the embedded (one machine) setup.

Powertools ships DynamoDB and Redis layers; a laptop running ``CLAWDBOT_SESSION_STORE=sqlite`` gets this one, a
file next to the sessions database. Like Powertools' own engines it overrides only the four storage primitives,
with the DynamoDB layer's semantics: ``_put_record`` succeeds only if no record exists, the record has expired,
or it is ``INPROGRESS`` past its in-progress expiry; the check and the write are one statement in a ``BEGIN
IMMEDIATE`` transaction, so two processes racing for one key cannot both win.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from aws_lambda_powertools.utilities.idempotency import BasePersistenceLayer
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyItemAlreadyExistsError,
    IdempotencyItemNotFoundError,
)
from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import STATUS_CONSTANTS, DataRecord

if TYPE_CHECKING:
    from collections.abc import Iterator

logger = logging.getLogger(__name__)

#: File name inside the data directory.
DB_FILENAME = "idempotency.sqlite3"
BUSY_TIMEOUT_MS = 30_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS idempotency (
    idempotency_key        TEXT PRIMARY KEY,
    status                 TEXT NOT NULL,
    expiration             INTEGER NOT NULL,
    in_progress_expiration INTEGER,
    data                   TEXT NOT NULL DEFAULT '',
    validation             TEXT NOT NULL DEFAULT ''
);
"""

# Insert, or take over a record that is expired or whose in-progress lock has lapsed; otherwise change nothing.
_PUT = """
INSERT INTO idempotency (idempotency_key, status, expiration, in_progress_expiration, data, validation)
VALUES (?, ?, ?, ?, '', ?)
ON CONFLICT (idempotency_key) DO UPDATE SET
    status = excluded.status, expiration = excluded.expiration,
    in_progress_expiration = excluded.in_progress_expiration, data = '', validation = excluded.validation
WHERE idempotency.expiration < ?
   OR (idempotency.status = ? AND idempotency.in_progress_expiration IS NOT NULL
       AND idempotency.in_progress_expiration < ?)
"""

_UPDATE = """
INSERT INTO idempotency (idempotency_key, status, expiration, data, validation) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (idempotency_key) DO UPDATE SET
    status = excluded.status, expiration = excluded.expiration, data = excluded.data,
    validation = CASE WHEN ? THEN excluded.validation ELSE idempotency.validation END
"""

_SELECT = ("SELECT idempotency_key, status, expiration, in_progress_expiration, data, validation "
           "FROM idempotency WHERE idempotency_key = ?")


class SQLitePersistenceLayer(BasePersistenceLayer):
    """Idempotency records in one SQLite file (created if missing). Safe across threads and processes."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One connection behind a lock: records are tiny and per-turn, so serializing this process's calls costs
        # nothing next to a model run; SQLite's own locking covers other processes.
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                     timeout=BUSY_TIMEOUT_MS / 1000)
        with self._lock:
            self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._conn.execute("PRAGMA journal_mode = WAL")
            # NORMAL is durable across process crashes in WAL mode (as the sessions database is run).
            self._conn.execute("PRAGMA synchronous = NORMAL")
            self._conn.executescript(_SCHEMA)
            # No TTL daemon here: expired records are dropped when a process opens the file.
            self._conn.execute("DELETE FROM idempotency WHERE expiration < ?", (int(time.time()),))
        logger.debug("SQLite idempotency store at %s", self.path)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``: the write lock is taken before the statement reads the row."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    @staticmethod
    def _record(row: tuple) -> DataRecord:
        key, status, expiration, in_progress_expiration, data, validation = row
        return DataRecord(idempotency_key=key, status=status, expiry_timestamp=expiration,
                          in_progress_expiry_timestamp=in_progress_expiration, response_data=data,
                          payload_hash=validation)

    # ----------------------------------------------------------------- Powertools' storage primitives
    def _get_record(self, idempotency_key: str) -> DataRecord:
        with self._lock:
            row = self._conn.execute(_SELECT, (idempotency_key,)).fetchone()
        if row is None:
            raise IdempotencyItemNotFoundError
        return self._record(row)

    def _put_record(self, data_record: DataRecord) -> None:
        now = time.time()
        validation = data_record.payload_hash if self.payload_validation_enabled else ""
        with self._transaction() as conn:
            cursor = conn.execute(_PUT, (
                data_record.idempotency_key, data_record.status, data_record.expiry_timestamp,
                data_record.in_progress_expiry_timestamp, validation or "",
                int(now), STATUS_CONSTANTS["INPROGRESS"], int(now * 1000)))
            if cursor.rowcount:
                return
            row = conn.execute(_SELECT, (data_record.idempotency_key,)).fetchone()
        old = self._record(row)
        logger.debug("idempotency record %s exists with status %s", data_record.idempotency_key, old.status)
        self._validate_payload(data_payload=data_record, stored_data_record=old)
        raise IdempotencyItemAlreadyExistsError(old_data_record=old)

    def _update_record(self, data_record: DataRecord) -> None:
        with self._transaction() as conn:
            conn.execute(_UPDATE, (data_record.idempotency_key, data_record.status, data_record.expiry_timestamp,
                                   data_record.response_data or "", data_record.payload_hash or "",
                                   self.payload_validation_enabled))

    def _delete_record(self, data_record: DataRecord) -> None:
        with self._transaction() as conn:
            conn.execute("DELETE FROM idempotency WHERE idempotency_key = ?", (data_record.idempotency_key,))
