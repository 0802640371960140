"""SQLite-specific behaviour: the data directory, WAL, several processes on one file, the expiry sweep."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import time
from typing import TYPE_CHECKING

from clawdbot.config.settings import Settings
from clawdbot.sessions import NewEntry
from clawdbot.sessions.base import StoreConfig
from clawdbot.sessions.factory import build_store
from clawdbot.sessions.sqlite import DB_FILENAME, SQLiteSessionStore

if TYPE_CHECKING:
    from pathlib import Path

    import pytest


def test_data_dir_is_created_and_the_database_uses_wal(tmp_path: Path) -> None:
    data_dir = tmp_path / "a" / "b" / "data"

    store = SQLiteSessionStore(data_dir)
    store.append("s1", [NewEntry("user", "hi")], create=True)
    store.close()

    assert (data_dir / DB_FILENAME).is_file()
    with sqlite3.connect(data_dir / DB_FILENAME) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("SELECT session_id, seq, role, content FROM entries").fetchall() == [("s1", 0, "user", "hi")]
        assert raw.execute("SELECT next_seq FROM sessions WHERE session_id = 's1'").fetchone() == (1,)


def test_factory_defaults_to_sqlite_in_dot_clawdbot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("CLAWDBOT_SESSION_STORE", "CLAWDBOT_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)

    store = build_store(Settings())

    assert isinstance(store, SQLiteSessionStore)
    assert store.path.resolve() == (tmp_path / ".clawdbot" / DB_FILENAME).resolve()
    store.close()


def test_the_embedded_path_imports_no_network_clients() -> None:
    # Cold start: a process on SQLite must not pay for boto3's DynamoDB paths or redis.
    code = ("import sys, clawdbot.sessions, clawdbot.sessions.factory, clawdbot.sessions.sqlite; "
            "print(sorted(m for m in ('redis', 'boto3', 'botocore') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout

    assert out.strip() == "[]"


def test_data_survives_reopening(tmp_path: Path) -> None:
    first = SQLiteSessionStore(tmp_path)
    sid = first.create(attributes={"k": "v"}).session_id
    first.append(sid, [NewEntry("user", "persisted")])
    first.close()

    second = SQLiteSessionStore(tmp_path)

    assert second.get(sid).attributes == {"k": "v"}
    assert [e.content for e in second.read_recent(sid, 5)] == ["persisted"]
    second.close()


def test_processes_sharing_the_file_never_lose_or_duplicate_sequences(tmp_path: Path) -> None:
    # GIVEN three worker processes (as `uvicorn --workers 3` would run) appending to one session at once
    setup = SQLiteSessionStore(tmp_path)
    setup.create("shared")
    setup.close()
    worker = textwrap.dedent(f"""
        import sys
        from clawdbot.sessions import NewEntry
        from clawdbot.sessions.sqlite import SQLiteSessionStore
        store = SQLiteSessionStore({str(tmp_path)!r})
        for i in range(25):
            store.append("shared", [NewEntry("user", f"{{sys.argv[1]}}-{{i}}"), NewEntry("assistant", "ok")])
    """)
    procs = [subprocess.Popen([sys.executable, "-c", worker, name]) for name in ("a", "b", "c")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]

    # THEN all 75 turns are there, in pairs, on a gap-free sequence
    store = SQLiteSessionStore(tmp_path)
    sid = "shared"
    entries = store.read(sid, limit=500).entries
    assert [e.seq for e in entries] == list(range(150))
    assert sorted(e.content for e in entries[::2]) == sorted(f"{w}-{i}" for w in "abc" for i in range(25))
    assert {e.content for e in entries[1::2]} == {"ok"}
    assert store.get(sid).next_seq == 150
    store.close()


def test_purge_removes_expired_sessions_from_disk(tmp_path: Path) -> None:
    expiring = SQLiteSessionStore(tmp_path, StoreConfig(ttl_seconds=60))
    forever = SQLiteSessionStore(tmp_path, StoreConfig(ttl_seconds=None))
    expiring.append("old", [NewEntry("user", "bye"), NewEntry("assistant", "ciao")], create=True)
    forever.append("kept", [NewEntry("user", "hi")], create=True)

    removed = expiring.purge_expired(now=time.time() + 61)

    assert removed == 1
    assert forever.get("kept").next_seq == 1
    with sqlite3.connect(tmp_path / DB_FILENAME) as raw:
        assert raw.execute("SELECT session_id, content FROM entries").fetchall() == [("kept", "hi")]
        assert raw.execute("SELECT session_id FROM sessions").fetchall() == [("kept",)]
    expiring.close()
    forever.close()
