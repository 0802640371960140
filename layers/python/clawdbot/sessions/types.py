"""Session records, shared by every store engine (the DynamoDB item shape mirrors them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class SessionMeta:
    session_id: str
    created_at: float
    updated_at: float
    #: Sequence number the next appended entry will get (== number of entries ever appended).
    next_seq: int = 0
    #: Who may read it (API key id); ``None`` for the open local server.
    owner: str | None = None
    #: Unix time after which the session is gone unless used again (sliding TTL).
    expires_at: int | None = None
    #: Free-form small metadata: A/B variant, title, ...
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class NewEntry:
    """An entry to append; the store assigns ``seq`` and ``created_at``."""

    role: str
    content: str
    turn_id: str | None = None
    #: Per-entry facts: usage, latency, variant, finish_reason.
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TranscriptEntry:
    seq: int
    role: str
    content: str
    created_at: float
    turn_id: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EntryPage:
    """A page of entries in ascending ``seq`` order; ``next_after`` continues the listing (None at the end)."""

    entries: list[TranscriptEntry]
    next_after: int | None
