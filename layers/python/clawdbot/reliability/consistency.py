"""Walk a session store and check every transcript is whole: what a race, a crash or a fault must never break.

A transcript is consistent when:

* its sequence numbers run 0, 1, 2, ... with no gap or repeat, and the session's ``next_seq`` equals their count;
* it is a series of whole turns: each turn is a run of entries sharing one ``turn_id``, one or more non-assistant
  messages followed by exactly one assistant reply (so every reply sits right after its own question, and no
  question was stored without its reply);
* no turn id appears twice (a retried or redelivered turn was stored once).

The checker reads through the public store API (paged ``read``), so it checks what clients would see, on any
engine. ``all_session_ids`` lists every session an engine holds (for a soak that cannot know them all); listing
is engine-specific because the store contract has no "list everything" (it would be a table scan on DynamoDB).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from clawdbot.sessions.exceptions import SessionNotFoundError

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from clawdbot.sessions.base import SessionStore
    from clawdbot.sessions.types import TranscriptEntry

logger = logging.getLogger(__name__)


@dataclass
class ConsistencyReport:
    """What a walk found: counts, and one line per problem (empty when every session is consistent)."""

    sessions: int = 0
    entries: int = 0
    turns: int = 0
    problems: list[str] = field(default_factory=list)
    #: Every turn id seen, per session (for callers that check which turns were stored).
    turn_ids: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {"sessions": self.sessions, "entries": self.entries, "turns": self.turns,
                "problems": list(self.problems)}


def read_transcript(store: SessionStore, session_id: str) -> list[TranscriptEntry]:
    """Every entry of a session, oldest first, through the paged public ``read``."""
    entries: list[TranscriptEntry] = []
    after: int | None = None
    while True:
        page = store.read(session_id, after=after, limit=store.config.max_page_size)
        entries.extend(page.entries)
        if page.next_after is None:
            return entries
        after = page.next_after


def transcript_problems(session_id: str, entries: list[TranscriptEntry], next_seq: int | None = None) -> list[str]:
    """The consistency rules (module docstring) applied to one transcript; [] when it is whole."""
    problems: list[str] = []
    where = f"session {session_id}"
    seqs = [e.seq for e in entries]
    if seqs != list(range(len(entries))):
        problems.append(f"{where}: sequence is not 0..{len(entries) - 1} without gaps: {_short(seqs)}")
    if next_seq is not None and next_seq != len(entries):
        problems.append(f"{where}: next_seq is {next_seq} but {len(entries)} entries are stored")
    seen: set[str] = set()
    for turn_id, run in _runs(entries):
        at = f"{where} seq {run[0].seq}"
        if turn_id is None:
            problems.append(f"{at}: entries without a turn id")
            continue
        if turn_id in seen:
            problems.append(f"{at}: turn {turn_id} stored twice")
        seen.add(turn_id)
        roles = [e.role for e in run]
        if roles[-1] != "assistant":
            problems.append(f"{at}: turn {turn_id} has no reply (roles {roles})")
        elif "assistant" in roles[:-1] or len(roles) < 2:
            problems.append(f"{at}: turn {turn_id} is not questions then one reply (roles {roles})")
    return problems


def check_sessions(store: SessionStore, session_ids: Iterable[str]) -> ConsistencyReport:
    """Check the given sessions (one that no longer exists, deleted or expired, is skipped)."""
    report = ConsistencyReport()
    for session_id in session_ids:
        try:
            meta = store.get(session_id)
            entries = read_transcript(store, session_id)
        except SessionNotFoundError:
            continue
        report.sessions += 1
        report.entries += len(entries)
        ids = [turn_id for turn_id, _ in _runs(entries) if turn_id is not None]
        report.turns += len(ids)
        report.turn_ids[session_id] = ids
        report.problems += transcript_problems(session_id, entries, meta.next_seq)
    logger.debug("checked %d sessions: %d problems", report.sessions, len(report.problems))
    return report


def check_store(store: SessionStore) -> ConsistencyReport:
    """Check every session the store holds."""
    return check_sessions(store, all_session_ids(store))


def all_session_ids(store: SessionStore) -> Iterator[str]:
    """Every session id in the store (expired ones included; ``check_sessions`` skips those)."""
    from clawdbot.sessions.sqlite import SQLiteSessionStore

    if isinstance(store, SQLiteSessionStore):
        with store._connection() as conn:
            rows = conn.execute("SELECT session_id FROM sessions ORDER BY session_id").fetchall()
        yield from (row[0] for row in rows)
        return
    kind = type(store).__name__
    if kind == "RedisSessionStore":
        yield from _redis_ids(store)
    elif kind == "DynamoDBSessionStore":
        yield from _dynamodb_ids(store)
    else:
        raise TypeError(f"cannot list the sessions of a {kind}")


def _redis_ids(store: Any) -> Iterator[str]:
    prefix = store.key_prefix
    for key in store.client.scan_iter(match=f"{prefix}{{*}}:meta", count=500):
        text = key.decode() if isinstance(key, bytes) else key
        yield text[len(prefix) + 1:-len("}:meta")]


def _dynamodb_ids(store: Any) -> Iterator[str]:
    kwargs: dict[str, Any] = {"TableName": store.table_name, "FilterExpression": "sk = :meta AND begins_with(pk, :s)",
                              "ExpressionAttributeValues": {":meta": {"S": "META"}, ":s": {"S": "SESSION#"}},
                              "ProjectionExpression": "pk", "ConsistentRead": True}
    while True:
        resp = store.client.scan(**kwargs)
        for item in resp["Items"]:
            yield item["pk"]["S"][len("SESSION#"):]
        if "LastEvaluatedKey" not in resp:
            return
        kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]


def _runs(entries: list[TranscriptEntry]) -> Iterator[tuple[str | None, list[TranscriptEntry]]]:
    """Maximal runs of consecutive entries with one turn id."""
    run: list[TranscriptEntry] = []
    for entry in entries:
        if run and entry.turn_id != run[-1].turn_id:
            yield run[-1].turn_id, run
            run = []
        run.append(entry)
    if run:
        yield run[-1].turn_id, run


def _short(values: list[int], limit: int = 20) -> str:
    return str(values) if len(values) <= limit else f"{values[:limit]}... ({len(values)} in all)"
