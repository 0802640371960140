"""``Idempotency-Key`` on ``POST /v1/chat/completions``: a retried request gets the first answer, not a second turn.

A client that lost the response to a turn (a timeout, a dropped connection) cannot tell whether the turn was stored;
retrying blindly could store it twice. With an ``Idempotency-Key`` header (the IETF httpapi draft's name, as Stripe
and others use it) the retry is safe:

* the first request with a key *claims* it (a conditional write: exactly one of any number of racing requests wins)
  and runs the turn; on success the answer is recorded under the key and sent;
* a retry with the same key and the same request gets the recorded answer back (``idempotent-replayed: true``),
  with nothing run or stored again, streamed or not as it asks;
* a retry while the first is still running gets 409 ``idempotency_key_in_use`` with ``Retry-After``;
* the same key with a different request (body, session or variant) gets 422 ``idempotency_key_reused``;
* a request that fails records nothing (its claim is released), so its retry runs the turn afresh.

Keys are scoped to the caller (API key id), so two callers never see each other's answers. Records live in the
Powertools idempotency persistence layer the queued turns already use (the sessions' DynamoDB table or Redis, or a
SQLite file next to the sessions), for ``CLAWDBOT_IDEMPOTENCY_TTL_SECONDS``.

One window needs more than the record: a process that stored the turn but died before recording the answer. Its
claim lapses after ``CLAWDBOT_IDEMPOTENCY_LOCK_SECONDS``, and the retry that takes it over would run the turn again.
So the turn id is derived from the key and the request, and before running, a claimed session turn looks for that
id among the session's newest entries: if the turn is there, its stored reply is the answer.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from clawdbot.exceptions import ClawdbotError, ConflictError, InvalidRequestError

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.idempotency import BasePersistenceLayer

    from clawdbot.api.dependencies import Resources
    from clawdbot.sessions.base import SessionStore

logger = logging.getLogger(__name__)

#: Prefix of the records' keys (``<prefix>#<sha256>``), apart from the queued turns' ``clawdbot-turn``.
KEY_PREFIX = "clawdbot-request"
#: Visible ASCII, 1-255 characters (what the draft and Stripe accept; UUIDs are typical).
_KEY_PATTERN = re.compile(r"^[\x21-\x7e]{1,255}$")
#: Response headers a replay repeats.
_REPLAYED_HEADERS = ("x-session-id", "x-clawdbot-variant")


class IdempotencyKeyInUseError(ConflictError):
    """A request with this key is still running."""

    code = "idempotency_key_in_use"


class IdempotencyKeyReusedError(ClawdbotError):
    """The key was first used with a different request."""

    status_code = 422
    error_type = "invalid_request_error"
    code = "idempotency_key_reused"


def fingerprint(request: dict[str, Any]) -> str:
    """SHA-256 of the request's canonical JSON: what must be equal for a retry to count as the same request."""
    return hashlib.sha256(json.dumps(request, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def derived_turn_id(owner: str | None, key: str, request_hash: str) -> str:
    """The turn id of a keyed request: the same for every retry of it, different for any other request."""
    digest = hashlib.sha256(f"{owner or ''}\x00{key}\x00{request_hash}".encode()).hexdigest()
    return "chatcmpl-" + digest[:24]


def recorded_completion(store: SessionStore, session_id: str, turn_id: str, window: int) -> dict[str, Any] | None:
    """The completion of turn ``turn_id`` rebuilt from the transcript, if its reply is among the newest entries."""
    from clawdbot.api.schemas import completion_dict
    from clawdbot.sessions.exceptions import SessionNotFoundError

    try:
        entries = store.read_recent(session_id, window)
    except SessionNotFoundError:
        return None
    for entry in reversed(entries):
        if entry.turn_id == turn_id and entry.role == "assistant":
            facts = entry.attributes
            return completion_dict(
                completion_id=turn_id, created=int(entry.created_at), model=str(facts.get("model", "")),
                text=entry.content, finish_reason=str(facts.get("finish_reason", "stop")),
                prompt_tokens=int(facts.get("prompt_tokens", 0)),
                completion_tokens=int(facts.get("completion_tokens", 0)),
                cached_tokens=int(facts.get("cached_tokens", 0)))
    return None


@dataclass
class Claim:
    """A key this request holds: record its answer with :meth:`succeed`, or free the key with :meth:`release`."""

    guard: RequestIdempotency
    data: dict[str, Any]
    turn_id: str
    #: The recorded answer, when this request is a replay (then nothing is to be run).
    replay: dict[str, Any] | None = None
    _done: bool = field(default=False, repr=False)

    def succeed(self, completion: dict[str, Any], headers: dict[str, str]) -> None:
        """Record the answer. The turn is stored already, so a failure here is logged, not raised: the claim then
        lapses and a retry finds the turn in the transcript."""
        if self._done:
            return
        self._done = True
        record = {"request": self.data["request"], "completion": completion,
                  "headers": {k: v for k, v in headers.items() if k in _REPLAYED_HEADERS}}
        try:
            self.guard.persistence.save_success(self.data, record)
        except Exception:
            logger.warning("could not record the answer of an idempotent request", exc_info=True)

    def release(self, reason: BaseException) -> None:
        """Free the key after a failure (nothing was stored), so a retry runs the turn afresh."""
        if self._done:
            return
        self._done = True
        try:
            self.guard.persistence.delete_record(self.data, reason)  # type: ignore[arg-type]
        except Exception:
            logger.warning("could not release an idempotency key; it frees up when its lock lapses", exc_info=True)


class _Lease:
    """What Powertools asks of a Lambda context to bound an in-progress record: the time a request may take."""

    def __init__(self, seconds: int) -> None:
        self.millis = seconds * 1000

    def get_remaining_time_in_millis(self) -> int:
        return self.millis


class RequestIdempotency:
    """Claims, replays and records keyed requests. One per app, built on the first keyed request."""

    def __init__(self, persistence: BasePersistenceLayer, store: SessionStore, *, lock_seconds: int,
                 window: int, retry_after_seconds: int = 1) -> None:
        self.persistence = persistence
        self.store = store
        self.lease = _Lease(lock_seconds)
        self.window = window
        self.retry_after_seconds = retry_after_seconds

    @classmethod
    def from_resources(cls, res: Resources) -> RequestIdempotency:
        from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig

        from clawdbot.queue.idempotency import build_persistence_layer

        settings = res.settings
        # Payload validation is ours (the request's hash in the recorded answer), not Powertools': its Redis layer
        # drops the validation hash when it marks a record completed, so every replay there would look reused.
        config = IdempotencyConfig(event_key_jmespath="[owner, key]", raise_on_no_idempotency_key=True,
                                   expires_after_seconds=settings.idempotency_ttl_seconds, hash_function="sha256")
        layer = build_persistence_layer(settings, config, store=res.store, key_prefix=KEY_PREFIX)
        return cls(layer, res.store, lock_seconds=settings.idempotency_lock_seconds, window=settings.history_window)

    def claim(self, owner: str | None, key: str, request: dict[str, Any], session_id: str | None) -> Claim:
        """Claim ``key`` for ``request``, or return the recorded answer (``Claim.replay``); raises 409/422.

        ``session_id`` is the stored session the turn will go to, when known before it runs (the header, or the
        ``user`` field's session): there a lapsed claim's turn may already be recorded.
        """
        from aws_lambda_powertools.utilities.idempotency.exceptions import (
            IdempotencyItemAlreadyExistsError,
            IdempotencyItemNotFoundError,
        )

        if not _KEY_PATTERN.match(key):
            raise InvalidRequestError("The Idempotency-Key header must be 1-255 visible ASCII characters.",
                                      param="Idempotency-Key", code="invalid_idempotency_key")
        request_hash = fingerprint(request)
        data = {"owner": owner, "key": key, "request": request_hash}
        claim = Claim(self, data, derived_turn_id(owner, key, request_hash))
        for _ in range(3):  # a record may vanish between our put and our read (its request failed): try again
            try:
                self.persistence.save_inprogress(data, self.lease.get_remaining_time_in_millis())
            except IdempotencyItemAlreadyExistsError:
                try:
                    record = self.persistence.get_record(data)
                except IdempotencyItemNotFoundError:
                    continue
                if record is None or record.status != "COMPLETED":  # (a running request's hash is not known)
                    raise self._in_use() from None
                answer = record.response_json_as_dict()
                if answer.get("request") != request_hash:
                    raise self._reused() from None
                claim.replay = answer
                claim._done = True
                return claim
            else:
                if session_id is not None:
                    recorded = recorded_completion(self.store, session_id, claim.turn_id, self.window)
                    if recorded is not None:  # stored by a request that died before recording its answer
                        logger.debug("keyed turn %s is already in session %s", claim.turn_id, session_id)
                        headers = {"x-session-id": session_id}
                        claim.succeed(recorded, headers)
                        claim.replay = {"completion": recorded, "headers": headers}
                return claim
        raise self._in_use()

    def _in_use(self) -> IdempotencyKeyInUseError:
        return IdempotencyKeyInUseError(
            "A request with this Idempotency-Key is still being processed; retry after it finishes.",
            param="Idempotency-Key", headers={"Retry-After": str(self.retry_after_seconds)})

    @staticmethod
    def _reused() -> IdempotencyKeyReusedError:
        return IdempotencyKeyReusedError(
            "This Idempotency-Key was already used with a different request; use a new key for a new request.",
            param="Idempotency-Key")


_build_lock = threading.Lock()


def request_idempotency(res: Resources, state: Any) -> RequestIdempotency:
    """The app's :class:`RequestIdempotency`, built on first use (an app never sent a key imports nothing)."""
    guard: RequestIdempotency | None = getattr(state, "request_idempotency", None)
    if guard is None:
        with _build_lock:
            guard = getattr(state, "request_idempotency", None)
            if guard is None:
                guard = RequestIdempotency.from_resources(res)
                state.request_idempotency = guard
    return guard
