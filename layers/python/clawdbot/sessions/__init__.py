"""Session management: transcripts stored one item per entry, with a gap-free sequence per session.

Engines: ``clawdbot.sessions.sqlite`` (embedded default), and the AWS engines imported explicitly
(``clawdbot.sessions.dynamodb``, ``clawdbot.sessions.redis``) so a Lambda that never uses Redis never imports it.
"""

from clawdbot.sessions.base import SessionStore
from clawdbot.sessions.exceptions import SessionError, SessionExistsError, SessionNotFoundError
from clawdbot.sessions.types import EntryPage, NewEntry, SessionMeta, TranscriptEntry

__all__ = [
    "EntryPage",
    "NewEntry",
    "SessionError",
    "SessionExistsError",
    "SessionMeta",
    "SessionNotFoundError",
    "SessionStore",
    "TranscriptEntry",
]
