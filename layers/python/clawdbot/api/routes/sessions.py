"""Session resources: create, list the caller's, read (metadata + paginated transcript), delete."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from clawdbot.api.dependencies import Resources, caller_id, get_resources
from clawdbot.api.schemas import CreateSessionRequest
from clawdbot.sessions.exceptions import SessionNotFoundError

if TYPE_CHECKING:
    from clawdbot.sessions.types import EntryPage, SessionMeta, TranscriptEntry

router = APIRouter(prefix="/v1/sessions")


def session_dict(meta: SessionMeta, page: EntryPage | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": meta.session_id,
        "object": "session",
        "created_at": int(meta.created_at),
        "updated_at": int(meta.updated_at),
        "expires_at": meta.expires_at,
        "message_count": meta.next_seq,
        "metadata": {k: v for k, v in meta.attributes.items() if k != "system_prompt"},
        "system_prompt": meta.attributes.get("system_prompt"),
    }
    if page is not None:
        body["messages"] = {"object": "list", "data": [entry_dict(e) for e in page.entries],
                            "has_more": page.next_after is not None, "next_after": page.next_after}
    return body


def entry_dict(entry: TranscriptEntry) -> dict[str, Any]:
    return {"seq": entry.seq, "role": entry.role, "content": entry.content, "created_at": entry.created_at,
            "turn_id": entry.turn_id, **({"metadata": entry.attributes} if entry.attributes else {})}


def _owned(res: Resources, session_id: str, owner: str | None) -> SessionMeta:
    meta = res.store.get(session_id)
    if meta.owner is not None and meta.owner != owner:
        raise SessionNotFoundError(f"No session with id '{session_id}'.", param="session_id")
    return meta


@router.post("", status_code=201)
async def create_session(request: Request, res: Annotated[Resources, Depends(get_resources)],
                         body: Annotated[CreateSessionRequest | None, Body()] = None) -> JSONResponse:
    body = body or CreateSessionRequest()
    attributes: dict[str, Any] = dict(body.metadata)
    if body.system_prompt:
        attributes["system_prompt"] = body.system_prompt
    meta = await run_in_threadpool(res.store.create, body.id, owner=caller_id(request), attributes=attributes)
    return JSONResponse(session_dict(meta), status_code=201, headers={"x-session-id": meta.session_id})


@router.get("")
async def list_sessions(request: Request, res: Annotated[Resources, Depends(get_resources)],
                        limit: Annotated[int, Query(ge=1, le=100)] = 50) -> dict[str, Any]:
    """The caller's sessions (metadata only), most recently used first — what a chat UI lists."""
    metas = await run_in_threadpool(res.store.list_owned, caller_id(request), limit=limit)
    return {"object": "list", "data": [session_dict(m) for m in metas]}


@router.get("/{session_id}")
async def read_session(
    session_id: str, request: Request, res: Annotated[Resources, Depends(get_resources)],
    after: Annotated[int | None, Query(ge=-1)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    def read() -> dict[str, Any]:
        meta = _owned(res, session_id, caller_id(request))
        return session_dict(meta, res.store.read(session_id, after=after, limit=limit))

    return await run_in_threadpool(read)


@router.delete("/{session_id}")
async def delete_session(session_id: str, request: Request,
                         res: Annotated[Resources, Depends(get_resources)]) -> dict[str, Any]:
    def delete() -> dict[str, Any]:
        _owned(res, session_id, caller_id(request))
        res.store.delete(session_id)
        return {"id": session_id, "object": "session.deleted", "deleted": True}

    return await run_in_threadpool(delete)
