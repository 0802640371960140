"""What became of a turn, as one JSON shape: stored as the idempotency record's response, returned by
``GET /v1/sessions/{id}/turns/{turn_id}``, and published to the reply target.

``status`` is one of:

* ``pending``: accepted (or unknown: turn ids are unguessable, so we do not spend a write per turn to tell them
  apart); the worker has not started it, or its last attempt died and SQS will redeliver it;
* ``in_progress``: a worker holds it now;
* ``done``: the reply is in the transcript (``reply``, ``finish_reason``, ``usage``);
* ``failed``: it can never succeed (unknown session, prompt too long, ...), or it failed on every delivery the
  queue allows (``turn_retries_exhausted``): ``error`` in OpenAI's shape, and nothing was added to the transcript.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from clawdbot.chat.service import TurnResult
    from clawdbot.exceptions import ClawdbotError
    from clawdbot.sessions.base import SessionStore

PENDING = "pending"
IN_PROGRESS = "in_progress"
DONE = "done"
FAILED = "failed"
FINAL_STATUSES = frozenset({DONE, FAILED})


def done_outcome(result: TurnResult) -> dict[str, Any]:
    turn = result.turn
    return {"status": DONE, "model": turn.model, "completed_at": int(time.time()),
            "reply": {"role": "assistant", "content": result.text}, "finish_reason": result.finish_reason,
            "usage": _usage(result.prompt_tokens, result.completion_tokens)}


def failed_outcome(exc: ClawdbotError) -> dict[str, Any]:
    return {"status": FAILED, "completed_at": int(time.time()),
            "error": {"message": exc.message, "type": exc.error_type, "param": exc.param, "code": exc.code}}


def turn_dict(session_id: str, turn_id: str, outcome: dict[str, Any]) -> dict[str, Any]:
    """The public object: ``{"id", "object": "session.turn", "session_id", "status", ...}``."""
    return {"id": turn_id, "object": "session.turn", "session_id": session_id, **outcome}


def find_recorded_turn(store: SessionStore, session_id: str, turn_id: str, window: int) -> dict[str, Any] | None:
    """The ``done`` outcome rebuilt from the transcript, if the turn's reply is among the newest ``window`` entries.

    The transcript is the truth: this answers for a turn whose worker appended the reply but died before marking
    the idempotency record completed (the redelivery must not run the turn again), and for a turn whose
    idempotency record has expired. On a FIFO queue a session's turns run one at a time, so a turn being retried
    is always among its session's newest entries.
    """
    for entry in reversed(store.read_recent(session_id, window)):
        if entry.turn_id == turn_id and entry.role == "assistant":
            facts = entry.attributes
            return {"status": DONE, "model": facts.get("model"), "completed_at": int(entry.created_at),
                    "reply": {"role": "assistant", "content": entry.content},
                    "finish_reason": facts.get("finish_reason", "stop"),
                    "usage": _usage(int(facts.get("prompt_tokens", 0)), int(facts.get("completion_tokens", 0)))}
    return None


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}
