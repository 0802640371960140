"""``POST /v1/sessions/{id}/feedback`` (a 1-5 score, optional comment, optional turn) and ``GET /metrics``.

Feedback lives in the session's metadata, one attribute per target — ``feedback:<turn id>`` for a turn,
``feedback:session`` for the conversation — so rating again replaces the earlier score and two ratings of
different turns never overwrite each other. Feedback on the whole conversation (no ``turn_id``) also *ends* it:
with at least one reply stored, the conversation counts as completed (``ConversationsCompleted``, once, marked
by ``completed_at``), the first of the two ways a conversation completes (docs/traffic.md).
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from clawdbot.api.dependencies import Resources, caller_id, get_resources
from clawdbot.exceptions import NotFoundError
from clawdbot.sessions.exceptions import SessionNotFoundError

router = APIRouter()

SESSION_TARGET = "session"
FEEDBACK_PREFIX = "feedback:"
COMPLETED_ATTRIBUTE = "completed_at"


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    score: int = Field(ge=1, le=5)
    comment: str | None = Field(default=None, max_length=2000)
    #: The turn rated (a completion's ``id``, ``chatcmpl-...``); omitted: the whole conversation.
    turn_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:-]{1,128}$")


@router.post("/v1/sessions/{session_id}/feedback", status_code=201)
async def post_feedback(session_id: str, body: FeedbackRequest, request: Request,
                        res: Annotated[Resources, Depends(get_resources)]) -> JSONResponse:
    def save() -> tuple[dict[str, Any], str, bool]:
        from clawdbot.traffic.ab import DEFAULT_VARIANT, VARIANT_ATTRIBUTE

        meta = res.store.get(session_id)
        if meta.owner is not None and meta.owner != caller_id(request):
            raise SessionNotFoundError(f"No session with id '{session_id}'.", param="session_id")
        now = time.time()
        record = {"score": body.score, "comment": body.comment, "created_at": now}
        attributes: dict[str, Any] = {FEEDBACK_PREFIX + (body.turn_id or SESSION_TARGET): record}
        ends = body.turn_id is None
        completed = ends and meta.next_seq > 0 and COMPLETED_ATTRIBUTE not in meta.attributes
        if completed:
            attributes[COMPLETED_ATTRIBUTE] = now
        res.store.update_attributes(session_id, attributes)
        return ({"object": "session.feedback", "session_id": session_id, "turn_id": body.turn_id,
                 **record, "completed": completed or COMPLETED_ATTRIBUTE in meta.attributes},
                str(meta.attributes.get(VARIANT_ATTRIBUTE, DEFAULT_VARIANT)), completed)

    payload, variant, completed = await run_in_threadpool(save)
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.on_feedback(variant, body.score, completed)
    return JSONResponse(payload, status_code=201)


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics(request: Request) -> Response:
    """Prometheus exposition of the catalogue (404 where metrics go to CloudWatch or nowhere)."""
    sink = getattr(getattr(request.app.state, "metrics", None), "sink", None)
    exposition = getattr(sink, "exposition", None)
    if exposition is None:
        raise NotFoundError("Metrics are not served here (CLAWDBOT_METRICS is not prometheus).",
                            code="unknown_url")
    from clawdbot.metrics.prometheus import CONTENT_TYPE

    return Response(exposition(), media_type=CONTENT_TYPE)
