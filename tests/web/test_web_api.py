"""What the pages need from the API: the caller's session list and the operations summary."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import httpx
import pytest

from clawdbot.sessions.base import StoreConfig
from clawdbot.sessions.exceptions import SessionListingUnsupportedError
from clawdbot.sessions.sqlite import SQLiteSessionStore
from clawdbot.sessions.types import NewEntry
from tests.web.conftest import VARIANTS

if TYPE_CHECKING:
    from pathlib import Path

    from tests.web.conftest import WebServer


def test_sqlite_lists_an_owners_live_sessions_most_recent_first(tmp_path: Path) -> None:
    store = SQLiteSessionStore(tmp_path, StoreConfig(ttl_seconds=3600))
    try:
        older = store.create(owner="alice", attributes={"title": "older"})
        newer = store.create(owner="alice")
        store.create(owner="bob")
        anonymous = store.create()
        time.sleep(0.01)
        store.append(older.session_id, [NewEntry("user", "hi")])  # used last: listed first

        assert [m.session_id for m in store.list_owned("alice")] == [older.session_id, newer.session_id]
        assert store.list_owned("alice")[0].attributes == {"title": "older"}
        assert store.list_owned("alice", limit=1)[0].session_id == older.session_id
        assert [m.session_id for m in store.list_owned(None)] == [anonymous.session_id]  # the open server's
        assert store.list_owned("carol") == []

        # An expired session is not listed, though its row is still on disk until the sweep
        with store._write() as conn:
            conn.execute("UPDATE sessions SET expires_at = ? WHERE session_id = ?", (int(time.time()) - 1,
                                                                                      newer.session_id))
        assert [m.session_id for m in store.list_owned("alice")] == [older.session_id]
    finally:
        store.close()


def test_sqlite_listing_uses_the_owner_index(tmp_path: Path) -> None:
    store = SQLiteSessionStore(tmp_path)
    try:
        with store._connection() as conn:
            plan = " ".join(row[-1] for row in conn.execute(
                "EXPLAIN QUERY PLAN SELECT session_id FROM sessions WHERE owner IS ? AND "
                "(expires_at IS NULL OR expires_at > ?) ORDER BY updated_at DESC LIMIT ?", ("alice", 0, 5)))
        assert "sessions_owner" in plan, plan
    finally:
        store.close()


def test_a_store_without_an_owner_index_refuses_to_list(redis_server: str) -> None:
    from clawdbot.sessions.redis import RedisSessionStore

    store = RedisSessionStore.from_url(redis_server, key_prefix="web-test:")
    try:
        store.create(owner="alice")
        with pytest.raises(SessionListingUnsupportedError) as refused:
            store.list_owned("alice")
        assert refused.value.status_code == 501
    finally:
        store.close()


def test_session_list_is_the_callers_own(web_server: WebServer) -> None:
    with web_server.api() as mine, web_server.api(web_server.other_key) as theirs:
        first = mine.post("/v1/sessions", json={"metadata": {"title": "mine"}}).json()["id"]
        second = mine.post("/v1/sessions", json={}).json()["id"]
        foreign = theirs.post("/v1/sessions", json={"metadata": {"title": "theirs"}}).json()["id"]

        listed = mine.get("/v1/sessions").json()
        assert listed["object"] == "list"
        ids = [s["id"] for s in listed["data"]]
        assert ids.index(second) < ids.index(first)  # most recently used first
        assert foreign not in ids
        assert next(s for s in listed["data"] if s["id"] == first)["metadata"]["title"] == "mine"
        assert all("messages" not in s for s in listed["data"])  # metadata only: one cheap query
        assert [s["id"] for s in mine.get("/v1/sessions", params={"limit": 1}).json()["data"]] == [second]
        assert foreign in [s["id"] for s in theirs.get("/v1/sessions").json()["data"]]

        assert mine.get("/v1/sessions", params={"limit": 0}).status_code == 400
    assert httpx.get(f"{web_server.base_url}/v1/sessions").status_code == 401


def test_ops_summary_reports_the_catalogue_in_its_own_units(web_server: WebServer) -> None:
    with web_server.api() as api:
        api.post("/v1/chat/completions", json={"model": api.get("/v1/models").json()["data"][0]["id"],
                                               "messages": [{"role": "user", "content": "hi"}]})
        assert api.get("/web/js/chart.js").status_code == 200
        # A request is counted once its response is sent, so the next one can be answered first: read the summary
        # until the asset's request is in it (by its template, not as the unrouted "-")
        deadline = time.monotonic() + 10
        while True:
            summary = api.get("/v1/ops/summary").json()
            routes = {s["labels"]["route"] for s in summary["metrics"]["Requests"]["series"]}
            if "/web/{path}" in routes or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        exposition = api.get("/metrics").text
    assert httpx.get(f"{web_server.base_url}/v1/ops/summary").status_code == 401

    metrics = summary["metrics"]
    assert {metrics[name]["level"] for name in metrics} == {"infrastructure", "service", "business"}
    assert {"/v1/chat/completions", "/web/{path}"} <= routes  # assets by their template, not as unrouted "-"
    # Durations in milliseconds, as recorded, where Prometheus has seconds
    prometheus_sum = sum(float(line.rsplit(" ", 1)[1]) for line in exposition.splitlines()
                         if line.startswith("clawdbot_turn_latency_seconds_sum"))
    latency = metrics["TurnLatency"]
    assert latency["unit"] == "Milliseconds"
    assert sum(s["sum"] for s in latency["series"]) == pytest.approx(prometheus_sum * 1000, rel=1e-6)
    turns = sum(s["value"] for s in metrics["Turns"]["series"])
    assert sum(s["count"] for s in latency["series"]) == turns >= 1
    for series in latency["series"]:
        assert series["buckets"][-1] == [None, series["count"]]  # +Inf as null: JSON has no infinity
        assert series["buckets"][0][0] == 5.0  # the 0.005 s bucket, in ms

    guard = summary["latency_guard"]
    assert list(guard["streaks"]) == [v["name"] for v in VARIANTS]
    assert summary["ab"]["control"] in guard["streaks"]
    assert summary["metrics_unavailable"] is None and summary["ab_unavailable"] is None


def test_every_asset_ships_as_package_data() -> None:
    """A wheel carries only the files ``[tool.setuptools.package-data]`` names: every asset must match."""
    import fnmatch
    import tomllib

    from clawdbot.web.routes import STATIC_DIR
    from tests.web.conftest import REPO_ROOT

    patterns = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    package_root = STATIC_DIR.parents[1]  # .../clawdbot
    assets = [p.relative_to(package_root).as_posix() for p in STATIC_DIR.rglob("*") if p.is_file()]
    assert "web/static/js/chat.js" in assets

    def matches(path: str, pattern: str) -> bool:  # setuptools' glob: ``*`` stays within one folder
        parts, globs = path.split("/"), pattern.split("/")
        return len(parts) == len(globs) and all(fnmatch.fnmatchcase(p, g) for p, g in zip(parts, globs, strict=True))

    missing = [a for a in assets if not any(matches(a, pattern) for pattern in patterns["clawdbot"])]
    assert missing == []
