"""Model sessions: SageMaker's stateful-session routing, used to send a conversation's turns to one instance.

The container keeps the KV caches of its last turns (``clawdbot.inference.onnx.prefix_cache``), so a session's
next turn prefills only its new messages - on the instance that ran the last one. On an endpoint with several
instances, SageMaker routes each call to any of them unless the call names a *stateful session*: a call with
``SessionId="NEW_SESSION"`` asks the instance that takes it for a session id (the container answers it in the
``X-Amzn-SageMaker-New-Session-Id`` header, as ``<id>; Expires=<UTC time>``), and every later call with that id
goes to the same instance until the time given. The container keeps nothing per session: the id is a routing
key, and a turn that lands elsewhere (an instance replaced, a session expired) is only a cache miss.

This module is the wire format both sides share (no heavy imports: the Lambda imports it).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

#: ``SessionId`` value asking SageMaker (and the container behind it) for a new session.
NEW_SESSION = "NEW_SESSION"
#: Request header carrying ``SessionId`` to the container, and the response headers SageMaker reads back.
SESSION_HEADER = "X-Amzn-SageMaker-Session-Id"
NEW_SESSION_HEADER = "X-Amzn-SageMaker-New-Session-Id"
#: The body of a call that only opens a session (no generation): ``InvokeEndpointWithResponseStream`` cannot
#: open one, so a streamed turn without a session opens it first with this.
OPEN_SESSION_BODY = {"open_session": True}
#: How long an instance keeps a session's turns by default: an idle conversation's cache is likely evicted by then.
DEFAULT_TTL_SECONDS = 1800
#: A session this close to its expiry is not used for a new turn: a new one is opened instead, so a long
#: generation does not outlive its routing.
EXPIRY_MARGIN_SECONDS = 60
#: SageMaker's pattern for a session id (``SessionIdHeader``) and for the new-session header's value.
_ID = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9])*")
_NEW = re.compile(r"(?P<id>[a-zA-Z0-9](?:-*[a-zA-Z0-9])*);\s*Expires=(?P<expires>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z)")
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


@dataclass(frozen=True, slots=True)
class ModelSession:
    """A session id and when the instance stops routing it."""

    session_id: str
    expires: datetime

    def header(self) -> str:
        """The ``X-Amzn-SageMaker-New-Session-Id`` value (and the form a turn records it in)."""
        return f"{self.session_id}; Expires={self.expires.strftime(_TIME_FORMAT)}"

    def usable(self, now: datetime | None = None) -> bool:
        """Still routed for at least :data:`EXPIRY_MARGIN_SECONDS`."""
        now = now or datetime.now(UTC)
        return self.expires - now > timedelta(seconds=EXPIRY_MARGIN_SECONDS)


def new_session(ttl_seconds: int = DEFAULT_TTL_SECONDS, now: datetime | None = None) -> ModelSession:
    """A fresh session (the container's side): a random id, expiring ``ttl_seconds`` from now."""
    now = (now or datetime.now(UTC)).replace(microsecond=0)
    return ModelSession("ms-" + secrets.token_hex(16), now + timedelta(seconds=ttl_seconds))


def parse_session(value: object) -> ModelSession | None:
    """A ``<id>; Expires=<time>`` value (SageMaker's ``NewSessionId``, or a recorded one); ``None`` if it is not
    one (a turn recorded before sessions, a malformed header): the caller opens a new session then."""
    if not isinstance(value, str):
        return None
    match = _NEW.fullmatch(value.strip())
    if match is None or len(match["id"]) > 256:
        return None
    expires = datetime.strptime(match["expires"], _TIME_FORMAT).replace(tzinfo=UTC)
    return ModelSession(match["id"], expires)


def valid_session_id(value: str) -> bool:
    """Whether ``value`` may be sent as a ``SessionId`` (SageMaker's pattern, at most 256 characters)."""
    return len(value) <= 256 and _ID.fullmatch(value) is not None


__all__ = ["DEFAULT_TTL_SECONDS", "NEW_SESSION", "NEW_SESSION_HEADER", "OPEN_SESSION_BODY", "SESSION_HEADER",
           "ModelSession", "new_session", "parse_session", "valid_session_id"]
