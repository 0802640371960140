"""Queued turns: ``POST /v1/sessions/{id}/turns`` enqueues one (202 + turn id), ``GET .../turns/{turn_id}`` polls it.

The HTTP side of ``clawdbot.queue``: nothing runs the model here. The queue client and the status reader are built
on the first turn request and kept on ``app.state`` (an app that never serves a turn never imports Powertools'
idempotency or creates an SQS client).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from pydantic import ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from clawdbot.api.dependencies import Resources, caller_id, get_resources
from clawdbot.api.schemas import TextPart
from clawdbot.chat.service import new_turn_id
from clawdbot.exceptions import InvalidRequestError
from clawdbot.queue.enqueue import TurnQueue
from clawdbot.queue.exceptions import QueueNotConfiguredError
from clawdbot.queue.messages import TURN_ID_PATTERN, TurnMessage, TurnSampling
from clawdbot.queue.outcomes import FINAL_STATUSES, PENDING, turn_dict
from clawdbot.queue.replies import ReplyPublisher
from clawdbot.sessions.exceptions import SessionNotFoundError

if TYPE_CHECKING:
    from clawdbot.queue.status import TurnStatusReader

router = APIRouter(prefix="/v1/sessions")

#: Seconds a client polling a pending turn is asked to wait between polls.
POLL_AFTER_SECONDS = 1


class CreateTurnRequest(TurnSampling):
    """A queued turn: the user's message, and optionally how its reply is generated (``max_tokens``,
    ``temperature``, ``top_p``, ``seed``, ``stop``, as in a chat completion)."""

    model_config = ConfigDict(extra="forbid")
    #: The user's message (a string, or OpenAI's list of text parts).
    content: str | Annotated[list[TextPart], Field(min_length=1)]
    #: Optional client-chosen id: re-sending a POST with the same id queues no second turn.
    turn_id: str | None = Field(default=None, pattern=TURN_ID_PATTERN)
    #: Optional SNS topic (one of ``CLAWDBOT_REPLY_TOPIC_ARNS``) the outcome is published to.
    reply_topic_arn: str | None = Field(default=None, min_length=1, max_length=256)

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


@dataclass
class TurnResources:
    queue: TurnQueue | None
    status: TurnStatusReader
    replies: ReplyPublisher


_build_lock = threading.Lock()


async def get_turn_resources(request: Request, res: Annotated[Resources, Depends(get_resources)]) -> TurnResources:
    """Built once per app, on first use, in the thread pool (the build imports Powertools' idempotency and makes
    clients); every later request takes them as built, without a trip to a worker thread (a sync dependency would
    make one per request: a poll of a turn's status paid two thread hops instead of one)."""
    turns: TurnResources | None = getattr(request.app.state, "turns", None)
    if turns is not None:
        return turns
    return await run_in_threadpool(_build_turn_resources, request.app.state, res)


def _build_turn_resources(state: Any, res: Resources) -> TurnResources:
    """The build, once: requests that found no resources wait here for the first one's."""
    with _build_lock:
        turns: TurnResources | None = getattr(state, "turns", None)
        if turns is None:
            # Powertools' idempotency (and boto3 with it) is imported here, on the first turn request.
            from clawdbot.queue.idempotency import build_persistence_layer
            from clawdbot.queue.status import TurnStatusReader

            settings = res.settings
            turns = TurnResources(
                queue=TurnQueue(settings.queue_url) if settings.queue_url else None,
                status=TurnStatusReader(res.store, build_persistence_layer(settings, store=res.store),
                                        settings.history_window),
                replies=ReplyPublisher.from_settings(settings))
            state.turns = turns
    return turns


def _check_owner(res: Resources, session_id: str, owner: str | None) -> None:
    meta = res.store.get(session_id)
    if meta.owner is not None and meta.owner != owner:
        raise SessionNotFoundError(f"No session with id '{session_id}'.", param="session_id")


@router.post("/{session_id}/turns", status_code=202)
def create_turn(session_id: str, body: CreateTurnRequest, request: Request,
                res: Annotated[Resources, Depends(get_resources)],
                turns: Annotated[TurnResources, Depends(get_turn_resources)]) -> JSONResponse:
    if turns.queue is None:
        raise QueueNotConfiguredError("Queued turns are not enabled on this server (CLAWDBOT_QUEUE_URL is unset).")
    owner = caller_id(request)
    _check_owner(res, session_id, owner)  # 404 now, rather than a turn that fails later
    text = body.text()
    if not text:
        raise InvalidRequestError("content must not be empty.", param="content", code="empty_content")
    if body.reply_topic_arn is not None:
        turns.replies.check(body.reply_topic_arn)
    message = TurnMessage(session_id=session_id, turn_id=body.turn_id or new_turn_id(), content=text, owner=owner,
                          reply_topic_arn=body.reply_topic_arn, enqueued_at=int(time.time()),
                          **body.model_dump(include=set(TurnSampling.model_fields)))
    turns.queue.send(message)
    location = f"/v1/sessions/{session_id}/turns/{message.turn_id}"
    payload = turn_dict(session_id, message.turn_id, {"status": PENDING, "enqueued_at": message.enqueued_at})
    return JSONResponse(payload, status_code=202,
                        headers={"location": location, "retry-after": str(POLL_AFTER_SECONDS)})


@router.get("/{session_id}/turns/{turn_id}")
def read_turn(session_id: str, turn_id: Annotated[str, Path(pattern=TURN_ID_PATTERN)], request: Request,
              res: Annotated[Resources, Depends(get_resources)],
              turns: Annotated[TurnResources, Depends(get_turn_resources)]) -> JSONResponse:
    owner = caller_id(request)
    _check_owner(res, session_id, owner)
    outcome: dict[str, Any] = turns.status.outcome(session_id, turn_id, owner)
    headers = {} if outcome["status"] in FINAL_STATUSES else {"retry-after": str(POLL_AFTER_SECONDS)}
    return JSONResponse(turn_dict(session_id, turn_id, outcome), headers=headers)
