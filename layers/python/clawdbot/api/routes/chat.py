"""``POST /v1/chat/completions``: OpenAI's chat completion, optionally continuing a stored session.

A streamed turn reads its first delta before the response starts: an error before any text (throttling, a model
that is down, a prompt too long) is then a real HTTP status with its headers (``Retry-After``), as OpenAI answers,
not a 200 with the error inside the stream. With an ``Idempotency-Key`` header a retry gets the first answer back
(``clawdbot.api.idempotency``).
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Header, Request
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response, StreamingResponse

from clawdbot.api.dependencies import Resources, caller_id, get_resources
from clawdbot.api.json_body import read_model
from clawdbot.api.schemas import ChatCompletionRequest, add_choices, chunk_dict, completion_dict, usage_dict
from clawdbot.api.streaming import TOKEN_COALESCE_S, iterate_batches_in_thread
from clawdbot.chat.service import TurnRequest, user_session_id
from clawdbot.exceptions import ClawdbotError, InvalidRequestError, NotFoundError
from clawdbot.inference.cancellation import watching
from clawdbot.inference.openai_wire import cached_tokens_of, parse_logprobs
from clawdbot.inference.types import ChatMessage, StreamDelta

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Coroutine, Iterator

    from clawdbot.api.idempotency import Claim
    from clawdbot.chat.service import ChatService, PreparedTurn
    from clawdbot.inference.logprobs import TokenLogprob
    from clawdbot.inference.token_ids import Detokenizer

#: The event that ends an OpenAI stream.
_DONE = b"data: [DONE]\n\n"


class _ChatRoute(APIRoute):
    """The chat route as FastAPI documents it (from :func:`chat_completions`' signature), served by a handler of its
    own: the body read into its model by pydantic in one pass (``clawdbot.api.json_body``), the three headers read
    by name, the resources taken from the app (``get_resources``, the route's own dependency), and the endpoint
    called.

    FastAPI's generic handler would also solve the route's dependencies and header parameters one by one on every
    turn, for what is the same each time. Together that was ~0.15 ms of the event loop's time per turn: 0.30-0.41 →
    0.17-0.22 ms from the rate limiter's answer to the route's first line in a stage probe of the server, and
    ``bench.overhead``'s p50 at 64 clients 1.26-1.37 → 0.94-0.96 ms (docs/performance.md). The handler passes the
    endpoint's parameters in its signature's order: a parameter added there must be added here (the tests send
    every header, and one checks the route's OpenAPI entry).
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        async def handle(request: Request) -> Response:
            body = await read_model(request, ChatCompletionRequest)
            headers = request.headers
            return await chat_completions(body, request, await get_resources(request), headers.get("x-session-id"),
                                          headers.get("x-clawdbot-variant"), headers.get("idempotency-key"))

        return handle


router = APIRouter(route_class=_ChatRoute)


def _turn_request(body: ChatCompletionRequest, session_id: str | None, owner: str | None,
                  variant: str | None = None, turn_id: str | None = None) -> TurnRequest:
    return TurnRequest(
        messages=[ChatMessage(m.role, m.text()) for m in body.messages],
        max_tokens=body.completion_limit,
        temperature=body.temperature,
        top_p=body.top_p,
        seed=body.seed,
        stop=body.stop_sequences,
        presence_penalty=body.presence_penalty or 0.0,
        frequency_penalty=body.frequency_penalty or 0.0,
        logit_bias=body.logit_bias_pairs,
        logprobs=body.logprobs_wanted,
        session_id=session_id,
        user=body.user,
        owner=owner,
        variant=variant,
        turn_id=turn_id,
    )


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionRequest,
    request: Request,
    res: Annotated[Resources, Depends(get_resources)],
    x_session_id: Annotated[str | None, Header()] = None,
    x_clawdbot_variant: Annotated[str | None, Header()] = None,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> Response:
    if body.model != res.backend.model_id:
        raise NotFoundError(
            f"The model '{body.model}' does not exist. Available: {res.backend.model_id}.",
            param="model", code="model_not_found")
    if len(body.messages) > res.settings.max_messages:
        raise InvalidRequestError(
            f"Too many messages: at most {res.settings.max_messages} per request.", param="messages",
            code="too_many_messages")
    choices = body.n or 1
    if choices > 1 and (x_session_id is not None or body.user is not None):
        raise InvalidRequestError(
            "Unsupported value: 'n' greater than 1 is only supported for stateless requests (no x-session-id header, "
            "no 'user'): a stored conversation continues with one reply.", param="n", code="unsupported_value")
    owner = caller_id(request)
    claim: Claim | None = None
    if idempotency_key is not None:
        claim = await run_in_threadpool(_claim, request, res, body, owner, idempotency_key, x_session_id,
                                        x_clawdbot_variant)
        if claim.replay is not None:
            return _replay(claim.replay, body)
    turn_request = _turn_request(body, x_session_id, owner, x_clawdbot_variant, claim.turn_id if claim else None)
    release = await _admit(res, claim)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        # One worker thread for the whole turn: it decodes on while the response starts. The turn's slot goes
        # back when that thread is done with it, however fast the client reads.
        batches = iterate_batches_in_thread(_produce(res.chat, turn_request, claim, include_usage), TOKEN_COALESCE_S,
                                            on_done=release)
        try:
            head = await anext(batches)  # the turn, once its first delta is in: what fails before fails the request
        except BaseException:
            await batches.aclose()
            raise
        turn, text_stage, first = head[0]
        headers = _turn_headers(turn)
        return _EventStream(
            _sse(turn, [first, *head[1:]], batches, include_usage, claim, headers, text_stage),
            media_type="text/event-stream",
            headers={**headers, "cache-control": "no-cache", "x-accel-buffering": "no"})
    # One thread hop for the whole blocking turn (store reads, model, append), not one per step. A client that hangs
    # up meanwhile stops the model at its next token (clawdbot.inference.cancellation): a 499, the turn not recorded.
    try:
        async with watching(request.receive):
            payload, headers = await run_in_threadpool(_complete, res.chat, turn_request, claim, choices)
    finally:
        if release is not None:
            release()
    return JSONResponse(payload, headers=headers)


async def _admit(res: Resources, claim: Claim | None) -> Callable[[], None] | None:
    """Wait for one of the local server's chat-turn slots (``Resources.turns``; ``clawdbot.traffic.concurrency``)
    and return what gives it back; ``None`` where turns are not held back. A turn refused after its wait is a 503
    with ``Retry-After``, and releases its idempotency claim (a retry may run)."""
    turns = res.turns
    if turns is None:
        return None
    refusal = await turns.acquire()
    if refusal is None:
        return turns.release
    error = turns.refusal(refusal, "chat turns")
    if claim is not None:
        await run_in_threadpool(claim.release, error)
    raise error


def _claim(request: Request, res: Resources, body: ChatCompletionRequest, owner: str | None, key: str,
           session_id: str | None, variant: str | None) -> Claim:
    from clawdbot.api.idempotency import request_idempotency

    fields = {"body": body.model_dump(mode="json"), "session_id": session_id, "variant": variant}
    known_session = session_id or (user_session_id(body.user, owner) if body.user is not None else None)
    return request_idempotency(res, request.app.state).claim(owner, key, fields, known_session)


def _complete(chat: ChatService, request: TurnRequest, claim: Claim | None,
              choices: int = 1) -> tuple[dict[str, Any], dict[str, str]]:
    """The whole turn on this worker thread; with ``choices`` > 1 (``n``, a stateless turn), one generation per
    choice, one after another, each as its own turn for the metrics and the limiter (``_another_choice``)."""
    try:
        prepared = chat.prepare(request)
        result = chat.complete(prepared)
        others = [chat.complete(_another_choice(prepared, index)) for index in range(1, choices)]
    except BaseException as exc:
        if claim is not None:
            claim.release(exc)
        raise
    turn = result.turn
    headers = _turn_headers(turn)
    payload = completion_dict(
        completion_id=turn.turn_id, created=turn.created, model=turn.model, text=result.text,
        finish_reason=result.finish_reason, prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens, cached_tokens=result.cached_tokens, logprobs=result.logprobs)
    if others:
        add_choices(payload, [(r.text, r.finish_reason, r.completion_tokens, r.logprobs) for r in others])
    if claim is not None:
        claim.succeed(payload, headers)
    return payload, headers


def _another_choice(turn: PreparedTurn, index: int) -> PreparedTurn:
    """Choice ``index`` of a turn that asked for several: the same prompt and parameters, sampled again. With a
    ``seed``, choice ``i`` samples with ``seed + i``, so the whole answer is reproducible and its choices differ."""
    seed = turn.params.seed
    return replace(turn, params=replace(turn.params, seed=None if seed is None else seed + index),
                   started=time.perf_counter())


def _produce(chat: ChatService, request: TurnRequest, claim: Claim | None, include_usage: bool) -> Iterator[Any]:
    """The streamed turn, iterated on its worker thread: the turn with its text stage and its first item once its
    first token is in (so that what fails before any text fails the request), then the turn's other items.

    The first item travels with the turn, in one hand-off: handed over apart, it could miss the batch the turn
    is taken in, and the next batch is held for the coalescing window (``TOKEN_COALESCE_S``) after that one.

    Without stop strings on the in-process model the items are token ids and the final delta, and the text stage
    (:class:`_TextOnLoop`) makes the text and events on the event loop's thread, so this thread only runs the
    model (``clawdbot.inference.token_ids``); otherwise each item is a delta with its event, made here.
    """
    try:
        turn = chat.prepare(request)
        ids = chat.stream_ids(turn)
        deltas: Iterator[Any] = ids[0] if ids is not None else chat.stream(turn)
        first = next(deltas)
    except BaseException as exc:
        if claim is not None:
            claim.release(exc)
        raise
    content = _ContentEvents(_common(turn, include_usage))
    try:
        if ids is not None:
            yield turn, _TextOnLoop(ids[1](), content), first
            if not isinstance(first, StreamDelta):
                yield from deltas
            return
        yield turn, None, (first, content.event(first))
        if first.finish_reason is None:
            yield from content.tag(deltas)
    finally:
        deltas.close()  # type: ignore[attr-defined]  # a generator: its clean-up runs on this thread


def _common(turn: PreparedTurn, include_usage: bool) -> dict[str, Any]:
    return {"completion_id": turn.turn_id, "created": turn.created, "model": turn.model,
            "include_usage_field": include_usage}


def _replay(record: dict[str, Any], body: ChatCompletionRequest) -> Response:
    """A recorded answer, sent again the way the request asks (the same request: streamed or not, as before)."""
    completion = record["completion"]
    headers = {**record.get("headers", {}), "idempotent-replayed": "true"}
    if not body.stream:
        return JSONResponse(completion, headers=headers)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return _EventStream(_replayed_sse(completion, include_usage), media_type="text/event-stream",
                        headers={**headers, "cache-control": "no-cache"})


async def _replayed_sse(completion: dict[str, Any], include_usage: bool) -> AsyncIterator[bytes]:
    common = {"completion_id": completion["id"], "created": completion["created"], "model": completion["model"],
              "include_usage_field": include_usage}
    choice = completion["choices"][0]
    yield _event(chunk_dict(delta={"role": "assistant", "content": "", "refusal": None}, **common))
    logprobs = parse_logprobs(choice.get("logprobs"))
    if choice["message"]["content"] or logprobs:
        yield _event(chunk_dict(delta={"content": choice["message"]["content"]}, logprobs=logprobs, **common))
    yield _event(chunk_dict(delta={}, finish_reason=choice["finish_reason"], **common))
    if include_usage:
        usage = completion["usage"]
        yield _event(chunk_dict(delta={}, with_choice=False,
                                usage=usage_dict(usage["prompt_tokens"], usage["completion_tokens"],
                                                 cached_tokens_of(usage)),
                                **common))
    yield _Last(_DONE)


class _Last(bytes):
    """The stream's last bytes (those with ``[DONE]``): sent as the end of the response."""


class _EventStream(StreamingResponse):
    """A :class:`StreamingResponse` that sends a :class:`_Last` chunk as the end of the response, in one write with
    the chunked encoding's terminator, and only then closes the iterator (its clean-up: the decoding thread's
    return, the turn's claim).

    Starlette sends an empty end after the iterator is exhausted: a second write, and a second wake-up of the
    client, after the iterator's clean-up, all before the client has the whole response (~0.2 ms of a streamed
    turn here). A stream that yields no ``_Last`` ends as Starlette's does.
    """

    async def stream_response(self, send: Any) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        iterator = self.body_iterator
        async for chunk in iterator:
            if isinstance(chunk, _Last):
                await send({"type": "http.response.body", "body": bytes(chunk), "more_body": False})
                with anyio.CancelScope(shield=True):  # the client has it all: a disconnect now cancels nothing
                    await iterator.aclose()  # type: ignore[attr-defined]
                return
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _turn_headers(turn: PreparedTurn) -> dict[str, str]:
    headers = {"x-session-id": turn.session_id} if turn.session_id else {}
    headers["x-clawdbot-variant"] = turn.variant
    return headers


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n"


class _ContentEvents:
    """A turn's content chunks as SSE bytes from a template: only the text is JSON-encoded per token.

    The template is the ``json.dumps`` of the turn's content chunk with a placeholder text, cut at the
    placeholder, so an event is byte for byte what encoding the whole chunk would give.
    """

    _PLACEHOLDER = "\ue000clawdbot-content\ue000"

    def __init__(self, common: dict[str, Any]) -> None:
        self.common = common
        template = _event(chunk_dict(delta={"content": self._PLACEHOLDER}, **common))
        self.head, self.tail = template.split(json.dumps(self._PLACEHOLDER, ensure_ascii=False).encode())

    def __call__(self, text: str) -> bytes:
        return self.head + json.dumps(text, ensure_ascii=False).encode() + self.tail

    def event(self, delta: StreamDelta) -> bytes | None:
        """The content event of ``delta`` (``None`` without text or log probabilities); log probabilities, where
        asked for, go in the chunk whose text their tokens made, as OpenAI sends them."""
        if delta.logprobs:
            return _event(chunk_dict(delta={"content": delta.text}, logprobs=delta.logprobs, **self.common))
        return self(delta.text) if delta.text else None

    def tag(self, deltas: Iterator[StreamDelta]) -> Iterator[tuple[StreamDelta, bytes | None]]:
        """Each delta with its content event (:meth:`event`), made where ``deltas`` is iterated: on the
        decoding thread, so the event loop only writes bytes. Closing it closes ``deltas`` (the turn's clean-up
        runs on that thread too)."""
        try:
            for delta in deltas:
                yield delta, self.event(delta)
        finally:
            close = getattr(deltas, "close", None)
            if close is not None:
                close()


class _TextOnLoop:
    """The text stage of a turn streamed as token ids (``clawdbot.inference.token_ids``), run on the event loop's
    thread: the ids of a batch become one delta with its content event, as the decoding thread would have made
    them, while that thread decodes on; the final delta passes through. The detokenizer is this stream's alone."""

    __slots__ = ("content", "detokenizer")

    def __init__(self, detokenizer: Detokenizer, content: _ContentEvents) -> None:
        self.detokenizer = detokenizer
        self.content = content

    def __call__(self, batch: list[Any]) -> list[tuple[StreamDelta, bytes | None]]:
        final = batch[-1] if isinstance(batch[-1], StreamDelta) else None
        ids = batch[:-1] if final is not None else batch
        pairs: list[tuple[StreamDelta, bytes | None]] = []
        if ids and (text := self.detokenizer.extend(ids)):
            pairs.append((StreamDelta(text=text), self.content(text)))
        if final is not None:
            pairs.append((final, None))
        return pairs


async def _sse(turn: PreparedTurn, head: list[Any], batches: AsyncIterator[list[Any]], include_usage: bool,
               claim: Claim | None, headers: dict[str, str],
               text_stage: _TextOnLoop | None = None) -> AsyncIterator[bytes]:
    """OpenAI's stream: a role chunk, content chunks, a finish chunk, an optional usage chunk, ``[DONE]``.

    Every delta is its own chunk (its own ``data:`` event); the deltas decoded within ``TOKEN_COALESCE_S`` of
    the previous write go out together in the next one, the role chunk with the first text, and ``[DONE]`` with
    the finish chunk unless an idempotent answer is still to be recorded (a client that has seen ``[DONE]`` may
    retry at once). ``head``: the items taken with the turn; ``text_stage`` turns each batch of token ids into
    deltas with their events (a turn streamed as ids), else the items are those already.
    """
    common = _common(turn, include_usage)
    # The role chunk goes out with the first text (taken with the turn): one write, one wake-up of the client.
    role = _event(chunk_dict(delta={"role": "assistant", "content": "", "refusal": None}, **common))
    pieces: list[str] = []
    logged: list[TokenLogprob] | None = [] if turn.params.logprobs is not None else None
    finished: StreamDelta | None = None
    try:
        async for items in _after(head, batches):
            batch = items if text_stage is None else text_stage(items)
            events: list[bytes] = [role] if role else []
            role = b""
            for delta, event in batch:
                pieces.append(delta.text)
                if logged is not None and delta.logprobs:
                    logged.extend(delta.logprobs)
                if event is not None:
                    events.append(event)
                if delta.finish_reason is None:
                    continue
                finished = delta
                events.append(_event(chunk_dict(delta={}, finish_reason=delta.finish_reason, **common)))
                if include_usage:
                    events.append(_event(chunk_dict(
                        delta={}, with_choice=False, usage=usage_dict(delta.prompt_tokens, delta.completion_tokens,
                                                                   delta.cached_tokens),
                        **common)))
                if claim is None:  # nothing left to record: the end goes out with the last chunk, in one write
                    events.append(_DONE)
            if events:
                yield _Last(b"".join(events)) if events[-1] is _DONE else b"".join(events)
        if role:  # no delta at all (cannot happen: the final delta is always there), still a well-formed stream
            yield role
    except ClawdbotError as exc:
        # Headers are gone: report in-band, the way OpenAI's streaming endpoints do.
        yield role + _event({"error": {"message": exc.message, "type": exc.error_type, "param": exc.param,
                                       "code": exc.code}})
    finally:
        with anyio.CancelScope(shield=True):  # a client that hung up cancels us: clean up all the same
            await batches.aclose()  # (the worker stops after the token in hand)
            if claim is None:
                pass
            elif finished is not None:  # the answer is whole only once the turn is recorded (the final delta)
                await run_in_threadpool(claim.succeed, completion_dict(
                    completion_id=turn.turn_id, created=turn.created, model=turn.model, text="".join(pieces),
                    finish_reason=finished.finish_reason or "stop", prompt_tokens=finished.prompt_tokens,
                    completion_tokens=finished.completion_tokens, cached_tokens=finished.cached_tokens,
                    logprobs=logged), headers)
            else:
                await run_in_threadpool(claim.release, RuntimeError("the stream did not finish"))
    if finished is None or claim is not None:
        yield _Last(_DONE)


async def _after(head: list[Any], batches: AsyncIterator[list[Any]]) -> AsyncIterator[list[Any]]:
    if head:
        yield head
    async for batch in batches:
        yield batch
