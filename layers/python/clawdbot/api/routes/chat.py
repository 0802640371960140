"""``POST /v1/chat/completions``: OpenAI's chat completion, optionally continuing a stored session."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.responses import JSONResponse, StreamingResponse

from clawdbot.api.dependencies import Resources, caller_id, get_resources
from clawdbot.api.schemas import ChatCompletionRequest, chunk_dict, completion_dict, usage_dict
from clawdbot.chat.service import TurnRequest
from clawdbot.exceptions import ClawdbotError, NotFoundError
from clawdbot.inference.types import ChatMessage

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from clawdbot.chat.service import ChatService, PreparedTurn, TurnResult

router = APIRouter()


def _turn_request(body: ChatCompletionRequest, session_id: str | None, owner: str | None,
                  variant: str | None = None) -> TurnRequest:
    return TurnRequest(
        messages=[ChatMessage(m.role, m.text()) for m in body.messages],
        max_tokens=body.completion_limit,
        temperature=body.temperature,
        top_p=body.top_p,
        seed=body.seed,
        stop=body.stop_sequences,
        session_id=session_id,
        user=body.user,
        owner=owner,
        variant=variant,
    )


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionRequest,
    request: Request,
    res: Annotated[Resources, Depends(get_resources)],
    x_session_id: Annotated[str | None, Header()] = None,
    x_clawdbot_variant: Annotated[str | None, Header()] = None,
) -> JSONResponse | StreamingResponse:
    if body.model != res.backend.model_id:
        raise NotFoundError(
            f"The model '{body.model}' does not exist. Available: {res.backend.model_id}.",
            param="model", code="model_not_found")
    turn_request = _turn_request(body, x_session_id, caller_id(request), x_clawdbot_variant)
    if body.stream:
        turn = await run_in_threadpool(res.chat.prepare, turn_request)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(
            _sse(res.chat, turn, include_usage), media_type="text/event-stream",
            headers={**_turn_headers(turn), "cache-control": "no-cache", "x-accel-buffering": "no"})
    # One thread hop for the whole blocking turn (store reads, model, append), not one per step.
    result = await run_in_threadpool(_complete, res.chat, turn_request)
    turn = result.turn
    headers = _turn_headers(turn)
    return JSONResponse(completion_dict(
        completion_id=turn.turn_id, created=turn.created, model=turn.model, text=result.text,
        finish_reason=result.finish_reason, prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens), headers=headers)


def _complete(chat: ChatService, request: TurnRequest) -> TurnResult:
    return chat.complete(chat.prepare(request))


def _turn_headers(turn: PreparedTurn) -> dict[str, str]:
    headers = {"x-session-id": turn.session_id} if turn.session_id else {}
    headers["x-clawdbot-variant"] = turn.variant
    return headers


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n"


async def _sse(chat: ChatService, turn: PreparedTurn, include_usage: bool) -> AsyncIterator[bytes]:
    """OpenAI's stream: a role chunk, content chunks, a finish chunk, an optional usage chunk, ``[DONE]``."""
    common = {"completion_id": turn.turn_id, "created": turn.created, "model": turn.model,
              "include_usage_field": include_usage}
    yield _event(chunk_dict(delta={"role": "assistant", "content": "", "refusal": None}, **common))
    deltas: Iterator = chat.stream(turn)
    try:
        async for delta in iterate_in_threadpool(deltas):
            if delta.finish_reason is None:
                if delta.text:
                    yield _event(chunk_dict(delta={"content": delta.text}, **common))
                continue
            if delta.text:
                yield _event(chunk_dict(delta={"content": delta.text}, **common))
            yield _event(chunk_dict(delta={}, finish_reason=delta.finish_reason, **common))
            if include_usage:
                yield _event(chunk_dict(delta={}, with_choice=False,
                                        usage=usage_dict(delta.prompt_tokens, delta.completion_tokens), **common))
    except ClawdbotError as exc:
        # Headers are gone: report in-band, the way OpenAI's streaming endpoints do.
        yield _event({"error": {"message": exc.message, "type": exc.error_type, "param": exc.param,
                                "code": exc.code}})
    yield b"data: [DONE]\n\n"
