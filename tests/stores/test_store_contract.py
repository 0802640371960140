"""The definition of a session store: every engine (``make_store``/``store`` are parametrized) must pass this."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import pytest

from clawdbot.exceptions import InvalidRequestError
from clawdbot.sessions import NewEntry, SessionExistsError, SessionNotFoundError
from clawdbot.sessions.base import StoreConfig

if TYPE_CHECKING:
    from collections.abc import Callable

    from clawdbot.sessions import SessionStore, TranscriptEntry


def turn(i: int, **attributes: object) -> list[NewEntry]:
    """A user/assistant pair sharing a turn id, as the API appends them."""
    return [
        NewEntry(role="user", content=f"question {i}", turn_id=f"turn-{i}"),
        NewEntry(role="assistant", content=f"answer {i}", turn_id=f"turn-{i}", attributes=dict(attributes)),
    ]


def all_entries(store: SessionStore, session_id: str) -> list[TranscriptEntry]:
    out: list[TranscriptEntry] = []
    after = None
    while True:
        page = store.read(session_id, after=after, limit=100)
        out.extend(page.entries)
        if page.next_after is None:
            return out
        after = page.next_after


# ----------------------------------------------------------------------------------------- create / get
def test_create_generates_id_and_round_trips_metadata(store: SessionStore) -> None:
    meta = store.create(owner="key_1", attributes={"variant": "b", "title": "Café ☕"})

    assert meta.session_id.startswith("sess_") and len(meta.session_id) == 37
    got = store.get(meta.session_id)
    assert got.owner == "key_1"
    assert got.attributes == {"variant": "b", "title": "Café ☕"}
    assert got.next_seq == 0
    assert got.expires_at is not None and got.expires_at > time.time() + 23 * 3600
    assert got.created_at == pytest.approx(meta.created_at)


def test_create_with_client_id_rejects_duplicates(store: SessionStore) -> None:
    store.create("client-chosen.id:1@x")

    with pytest.raises(SessionExistsError):
        store.create("client-chosen.id:1@x")


def test_missing_session(store: SessionStore) -> None:
    assert store.get_optional("nope") is None
    with pytest.raises(SessionNotFoundError):
        store.get("nope")
    with pytest.raises(SessionNotFoundError):
        store.read("nope")
    assert store.read_recent("nope", 10) == []
    assert store.delete("nope") is False


@pytest.mark.parametrize("bad", ["", "has space", "x" * 129, "slash/id", "{brace}", "#hash"])
def test_invalid_session_ids_are_rejected_before_storage(store: SessionStore, bad: str) -> None:
    with pytest.raises(InvalidRequestError):
        store.append(bad, turn(0), create=True)


# ----------------------------------------------------------------------------------------- append
def test_append_assigns_consecutive_sequences_and_round_trips(store: SessionStore) -> None:
    sid = store.create().session_id
    before = store.get(sid)

    first = store.append(sid, turn(0, usage={"prompt_tokens": 12, "completion_tokens": 3}, finish="stop"))
    second = store.append(sid, [*turn(1), NewEntry(role="system", content="")])

    assert [e.seq for e in first] == [0, 1]
    assert [e.seq for e in second] == [2, 3, 4]
    stored = all_entries(store, sid)
    assert stored == [*first, *second]
    assert stored[1].attributes == {"usage": {"prompt_tokens": 12, "completion_tokens": 3}, "finish": "stop"}
    assert stored[1].turn_id == "turn-0" and stored[1].role == "assistant"
    assert stored[4].content == "" and stored[4].turn_id is None and stored[4].attributes == {}
    meta = store.get(sid)
    assert meta.next_seq == 5
    assert meta.updated_at >= before.updated_at


def test_append_to_missing_session(store: SessionStore) -> None:
    with pytest.raises(SessionNotFoundError):
        store.append("absent", turn(0))
    assert store.get_optional("absent") is None

    created = store.append("absent", turn(0), create=True, owner="key_9")

    assert [e.seq for e in created] == [0, 1]
    assert store.get("absent").owner == "key_9"


def test_append_nothing_is_a_no_op(store: SessionStore) -> None:
    sid = store.create().session_id

    assert store.append(sid, []) == []
    assert store.get(sid).next_seq == 0


# ----------------------------------------------------------------------------------------- read
def test_read_pages_through_the_transcript(store: SessionStore) -> None:
    sid = store.create().session_id
    for i in range(12):
        store.append(sid, turn(i))  # 24 entries

    p1 = store.read(sid, limit=10)
    p2 = store.read(sid, after=p1.next_after, limit=10)
    p3 = store.read(sid, after=p2.next_after, limit=10)

    assert [e.seq for e in p1.entries] == list(range(10)) and p1.next_after == 9
    assert [e.seq for e in p2.entries] == list(range(10, 20)) and p2.next_after == 19
    assert [e.seq for e in p3.entries] == list(range(20, 24)) and p3.next_after is None
    assert store.read(sid, after=23).entries == []


def test_read_of_an_exact_multiple_ends_without_a_cursor(store: SessionStore) -> None:
    sid = store.create().session_id
    for i in range(5):
        store.append(sid, turn(i))

    page = store.read(sid, after=4, limit=5)

    assert [e.seq for e in page.entries] == [5, 6, 7, 8, 9]
    assert page.next_after is None


@pytest.mark.parametrize("after", [10**12 - 1, 10**12, 10**13, 2**63, 10**40])
def test_read_after_a_cursor_past_any_sequence_finds_nothing(store: SessionStore, after: int) -> None:
    # A client may send any integer as the cursor: SQLite cannot bind one past 64 bits, DynamoDB's 12-digit sort
    # keys would compare a 13-digit one as text (and find entries), DynamoDB refuses numbers past 38 digits.
    sid = store.create().session_id
    store.append(sid, turn(0))

    page = store.read(sid, after=after)

    assert page.entries == [] and page.next_after is None


def test_read_clamps_the_page_size(make_store: Callable[..., SessionStore]) -> None:
    store = make_store(StoreConfig(max_page_size=3))
    sid = store.create().session_id
    store.append(sid, turn(0) + turn(1))

    page = store.read(sid, limit=100)

    assert [e.seq for e in page.entries] == [0, 1, 2] and page.next_after == 2


def test_read_recent_returns_the_newest_window_oldest_first(store: SessionStore) -> None:
    sid = store.create().session_id
    for i in range(15):
        store.append(sid, turn(i))  # 30 entries

    window = store.read_recent(sid, 7)

    assert [e.seq for e in window] == list(range(23, 30))
    assert window[-1].content == "answer 14"
    assert [e.seq for e in store.read_recent(sid, 1000)] == list(range(30))
    assert store.read_recent(sid, 0) == []


def test_sessions_do_not_see_each_other(store: SessionStore) -> None:
    # Ids chosen so that one is a prefix of the other: key layouts must not let one range-read the other.
    store.append("chat", turn(0), create=True)
    store.append("chat-2", turn(1), create=True)

    assert [e.content for e in store.read_recent("chat", 10)] == ["question 0", "answer 0"]
    assert [e.content for e in all_entries(store, "chat-2")] == ["question 1", "answer 1"]


# ----------------------------------------------------------------------------------------- delete / update
def test_delete_removes_session_and_entries(store: SessionStore) -> None:
    sid = store.create(attributes={"a": 1}).session_id
    store.append(sid, turn(0))

    assert store.delete(sid) is True

    assert store.get_optional(sid) is None
    assert store.read_recent(sid, 10) == []
    assert store.delete(sid) is False
    # The id is free again and starts from scratch.
    again = store.create(sid)
    assert again.attributes == {} and store.get(sid).next_seq == 0
    assert store.read(sid).entries == []


def test_update_attributes_merges(store: SessionStore) -> None:
    sid = store.create(attributes={"variant": "a", "title": "old"}).session_id
    store.append(sid, turn(0))

    updated = store.update_attributes(sid, {"title": "new", "tags": ["x", "ÿ"]})

    assert updated.attributes == {"variant": "a", "title": "new", "tags": ["x", "ÿ"]}
    got = store.get(sid)
    assert got.attributes == updated.attributes
    assert got.next_seq == 2
    with pytest.raises(SessionNotFoundError):
        store.update_attributes("missing", {"a": 1})


# ----------------------------------------------------------------------------------------- content
UNICODE_SAMPLES = [
    "emoji 🦀🐍👩‍👩‍👧‍👦 flags 🇯🇵",
    "CJK 你好\uff0c世界 / 日本語のテキスト / 한국어",
    "RTL مرحبا بالعالم שלום",
    "combining e\u0301 vs \u00e9, zero-width\u200bjoiner, BOM \ufeff",
    "astral \U0001d518\U0001d52b\U0001d526 and quotes \"'`\\ and newlines\r\n\t",
]


def test_unicode_round_trips_exactly(store: SessionStore) -> None:
    sid = store.create(attributes={"title": UNICODE_SAMPLES[0]}).session_id

    store.append(sid, [NewEntry(role="user", content=s, attributes={"k": s}) for s in UNICODE_SAMPLES])

    got = all_entries(store, sid)
    assert [e.content for e in got] == UNICODE_SAMPLES
    assert [e.attributes["k"] for e in got] == UNICODE_SAMPLES
    assert store.get(sid).attributes["title"] == UNICODE_SAMPLES[0]


def test_large_entries_round_trip(store: SessionStore) -> None:
    # GIVEN entries far beyond what one DynamoDB item could hold together (and one near the API's body limit)
    words = ["clawdbot", "naïve", "日本語", "🦀", "context", "window", "sequence"]
    big = " ".join(words[(i * 7919) % len(words)] + str(i % 97) for i in range(60_000))  # ~585 KB UTF-8
    medium = "x" * 150_000
    sid = store.create().session_id

    # WHEN several are appended, one turn after another
    store.append(sid, [NewEntry(role="user", content=big), NewEntry(role="assistant", content=medium)])
    store.append(sid, [NewEntry(role="user", content=medium + "!")])

    # THEN every byte comes back, through both read paths
    assert len(big.encode()) > 550_000
    assert [e.content for e in store.read_recent(sid, 10)] == [big, medium, medium + "!"]
    assert [e.content for e in all_entries(store, sid)] == [big, medium, medium + "!"]


# ----------------------------------------------------------------------------------------- concurrency
def test_concurrent_appends_lose_nothing_and_never_interleave(store: SessionStore) -> None:
    # GIVEN 50 turns released at once against one session
    sid = store.create().session_id
    n = 50
    barrier = threading.Barrier(n)

    def run(i: int) -> list[TranscriptEntry]:
        barrier.wait()
        return store.append(sid, turn(i))

    with ThreadPoolExecutor(max_workers=n) as pool:
        results = list(pool.map(run, range(n)))

    # THEN every turn is stored once, each pair on consecutive sequences, and the sequence has no gap
    stored = all_entries(store, sid)
    assert [e.seq for e in stored] == list(range(2 * n))
    assert store.get(sid).next_seq == 2 * n
    for k in range(n):
        user, assistant = stored[2 * k], stored[2 * k + 1]
        assert user.turn_id == assistant.turn_id
        assert (user.role, assistant.role) == ("user", "assistant")
    assert sorted(e.turn_id for e in stored[::2]) == sorted(f"turn-{i}" for i in range(n))
    # and what each caller was told matches what was stored
    assert sorted((e for r in results for e in r), key=lambda e: e.seq) == stored


def test_concurrent_first_turns_create_one_session(store: SessionStore) -> None:
    n = 12
    barrier = threading.Barrier(n)

    def run(i: int) -> list[TranscriptEntry]:
        barrier.wait()
        return store.append("fresh", turn(i), create=True)

    with ThreadPoolExecutor(max_workers=n) as pool:
        list(pool.map(run, range(n)))

    assert [e.seq for e in all_entries(store, "fresh")] == list(range(2 * n))


# ----------------------------------------------------------------------------------------- expiry
def test_expiry_slides_on_use_then_hides_the_session(make_store: Callable[..., SessionStore]) -> None:
    # GIVEN a 3 s idle TTL (expires_at is whole seconds, so a session lives 2-3 s after its last use)
    store = make_store(StoreConfig(ttl_seconds=3))
    sid = store.create().session_id
    store.append(sid, turn(0))
    t0 = time.time()

    # WHEN it is read 1.5 s later, its expiry slides past the original one
    time.sleep(1.5)
    assert len(store.read_recent(sid, 10)) == 2
    time.sleep(max(0.0, t0 + 3.2 - time.time()))
    assert store.get(sid).next_seq == 2  # alive past its first expiry: the read counted as use

    # THEN once idle for longer than the TTL it is gone from every read path
    time.sleep(max(0.0, t0 + 5.6 - time.time()))
    assert store.get_optional(sid) is None
    assert store.read_recent(sid, 10) == []
    with pytest.raises(SessionNotFoundError):
        store.read(sid)
    with pytest.raises(SessionNotFoundError):
        store.append(sid, turn(1))
    with pytest.raises(SessionNotFoundError):
        store.update_attributes(sid, {"a": 1})

    # AND the id can be reused: a new session with none of the old entries
    fresh = store.append(sid, turn(2), create=True)
    assert [e.seq for e in fresh] == [0, 1]
    assert [e.content for e in store.read_recent(sid, 10)] == ["question 2", "answer 2"]


def test_no_ttl_means_no_expiry(make_store: Callable[..., SessionStore]) -> None:
    store = make_store(StoreConfig(ttl_seconds=None))
    sid = store.create().session_id

    store.append(sid, turn(0))

    assert store.get(sid).expires_at is None
