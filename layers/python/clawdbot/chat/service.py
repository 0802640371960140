"""One chat turn, from request to stored transcript, independent of transport (HTTP, SQS).

Nothing is written until the model has produced the whole reply: a failed or abandoned generation leaves the
session exactly as it was, and a finished one appends the user message(s) and the reply together, so racing
turns on one session can never interleave a reply with someone else's question.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from clawdbot.chat.history import START_FACT, fit_history
from clawdbot.exceptions import InvalidRequestError
from clawdbot.inference.exceptions import ContextLengthExceededError
from clawdbot.inference.model_session import NEW_SESSION
from clawdbot.inference.types import ChatMessage, GenerationParams, StreamDelta
from clawdbot.sessions.context import fit_context
from clawdbot.sessions.types import NewEntry

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from clawdbot.config.settings import Settings
    from clawdbot.inference.base import InferenceBackend
    from clawdbot.inference.logprobs import TokenLogprob
    from clawdbot.inference.token_ids import Detokenizer, TokenIdStream
    from clawdbot.sessions.base import SessionStore
    from clawdbot.sessions.types import SessionMeta
    from clawdbot.traffic.ab import Variant, VariantRouter

logger = logging.getLogger(__name__)

SYSTEM_ROLES = frozenset({"system", "developer"})
#: The fact of a turn's reply entry that names the model session it ran in (``clawdbot.inference.model_session``).
MODEL_SESSION_FACT = "model_session"


@dataclass(frozen=True, slots=True)
class TurnRequest:
    """What a client asked for, transport-neutral."""

    messages: list[ChatMessage]
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    #: ``(token id, bias)`` pairs (``GenerationParams.logit_bias``).
    logit_bias: tuple[tuple[int, float], ...] = ()
    #: Report log probabilities with this many alternatives per token (``GenerationParams.logprobs``).
    logprobs: int | None = None
    #: Continue this stored session (must exist).
    session_id: str | None = None
    #: OpenAI's ``user`` field: continues (or starts) the caller's session for that end user.
    user: str | None = None
    #: Who is calling (API key id); scopes ``user`` sessions and ownership.
    owner: str | None = None
    turn_id: str | None = None
    #: Force this A/B variant (the ``x-clawdbot-variant`` header); ``None`` assigns one sticky per session.
    variant: str | None = None


@dataclass(frozen=True, slots=True)
class PreparedTurn:
    turn_id: str
    created: int
    model: str
    context: list[ChatMessage]
    params: GenerationParams
    prompt_tokens: int
    session_id: str | None
    #: Messages to append before the reply (the new, non-system messages of the request).
    new_entries: list[ChatMessage]
    create_session: bool = False
    owner: str | None = None
    started: float = field(default_factory=time.perf_counter)
    #: The A/B variant that serves this turn, and whether to record it as the session's sticky assignment.
    variant: str = "default"
    record_variant: bool = False
    #: Where the session's context history starts (``clawdbot.chat.history``), recorded with the reply.
    context_start: int | None = None


@dataclass(frozen=True, slots=True)
class TurnResult:
    turn: PreparedTurn
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    #: Time to the first streamed token (``None`` for a non-streamed turn).
    first_token_ms: float | None = None
    #: Prompt tokens the engine took from its prefix cache (the last turn's), not computed again.
    cached_tokens: int = 0
    #: The model session the turn ran in (``clawdbot.inference.model_session``), recorded for the next turn.
    model_session: str | None = None
    #: Each reply token's log probability, when the request asked for them.
    logprobs: tuple[TokenLogprob, ...] | None = None


def user_session_id(user: str, owner: str | None) -> str:
    """A stable session id for OpenAI's ``user`` field, scoped to the caller so two keys never collide."""
    digest = hashlib.sha256(f"{owner or ''}\x00{user}".encode()).hexdigest()[:32]
    return f"usr_{digest}"


def new_turn_id() -> str:
    return "chatcmpl-" + secrets.token_hex(12)


class ChatService:
    """Builds contexts, runs the model and records turns. Safe to share across threads."""

    def __init__(self, store: SessionStore, backend: InferenceBackend, settings: Settings, *,
                 variants: VariantRouter | None = None) -> None:
        self.store = store
        self.backend = backend
        self.settings = settings
        #: A/B arms (each with its backend); ``None`` serves every turn with ``backend`` as variant "default".
        self.variants = variants
        #: Called with every finished turn, after it is recorded (rate-limit charging, metrics).
        self.observers: list[Callable[[TurnResult], None]] = []

    # ------------------------------------------------------------------ preparing
    def prepare(self, request: TurnRequest) -> PreparedTurn:
        """Resolve the session, build and fit the context, and fix the generation parameters."""
        system = [m for m in request.messages if m.role in SYSTEM_ROLES]
        system = [ChatMessage("system", m.content) for m in system]
        session_id, create, meta = self._resolve_session(request)
        variant, record_variant = self._variant(request, session_id, meta)
        backend = variant.backend if variant is not None else self.backend
        variant_name = variant.name if variant is not None else "default"
        system_prompt = (variant.config.system_prompt if variant is not None else None) or self.settings.system_prompt

        context_start = None
        # A session's turn names where its last turn ran (its reply's fact), or asks for a model session; a
        # stateless one needs none. A turn served by another variant than the last (forced) runs elsewhere anyway.
        model_session = NEW_SESSION if session_id is not None else None
        if session_id is None:
            context = [m if m.role not in SYSTEM_ROLES else ChatMessage("system", m.content)
                       for m in request.messages]
            if not system and system_prompt:
                context.insert(0, ChatMessage("system", system_prompt))
            new_entries: list[ChatMessage] = []
            prompt_tokens = backend.count_prompt_tokens(context)
            reserve = request.max_tokens or 1
            if prompt_tokens + reserve > backend.context_length:
                raise self._too_long(prompt_tokens, reserve)
        else:
            new_entries = _new_messages(request.messages)
            if not new_entries:
                raise InvalidRequestError(
                    "With a session, messages must end with at least one new user message after the last "
                    "assistant message.", param="messages", code="no_new_message")
            if not system:
                prompt = None if meta is None else meta.attributes.get("system_prompt")
                system = [ChatMessage("system", p)] if (p := prompt or system_prompt) else []
            reserve = self._completion_reserve(request)
            budget = backend.context_length - reserve
            if create:
                context, prompt_tokens = fit_context(system, [], new_entries, budget, backend.count_prompt_tokens)
            else:
                fitted = fit_history(self.store, backend, session_id, system, new_entries, budget,
                                     window=self.settings.history_window, slack=self.settings.context_slack)
                context, prompt_tokens, context_start = fitted.context, fitted.prompt_tokens, fitted.start_seq
                facts = fitted.last_facts
                if isinstance(facts.get(MODEL_SESSION_FACT), str) and facts.get("variant", "default") == variant_name:
                    model_session = facts[MODEL_SESSION_FACT]
        max_tokens = request.max_tokens
        if max_tokens is None:
            max_tokens = max(1, min(self.settings.default_max_tokens,
                                    backend.context_length - prompt_tokens))
        arm = variant.config if variant is not None else None
        temperature = request.temperature if request.temperature is not None else (arm and arm.temperature)
        top_p = request.top_p if request.top_p is not None else (arm and arm.top_p)
        params = GenerationParams(
            max_tokens=max_tokens,
            temperature=1.0 if temperature is None else temperature,
            top_p=1.0 if top_p is None else top_p,
            seed=request.seed,
            stop=request.stop,
            presence_penalty=request.presence_penalty,
            frequency_penalty=request.frequency_penalty,
            logit_bias=request.logit_bias,
            logprobs=request.logprobs,
            model_session=model_session,
        )
        return PreparedTurn(
            turn_id=request.turn_id or new_turn_id(), created=int(time.time()), model=self.backend.model_id,
            context=context, params=params, prompt_tokens=prompt_tokens, session_id=session_id,
            new_entries=new_entries, create_session=create, owner=request.owner,
            variant=variant_name, record_variant=record_variant,
            context_start=context_start,
        )

    def _resolve_session(self, request: TurnRequest) -> tuple[str | None, bool, SessionMeta | None]:
        if request.session_id is not None:
            meta = self.store.get(request.session_id)  # 404 for an unknown id: no silent new conversation
            _check_owner(meta.owner, request.owner, request.session_id)
            return request.session_id, False, meta
        if request.user is not None:
            sid = user_session_id(request.user, request.owner)
            meta = self.store.get_optional(sid)
            return sid, meta is None, meta
        return None, False, None

    def _variant(self, request: TurnRequest, session_id: str | None,
                 meta: SessionMeta | None) -> tuple[Variant | None, bool]:
        """The turn's A/B variant, and whether to record it as the session's sticky assignment (first turn)."""
        if self.variants is None:
            return None, False
        if request.variant is not None:  # forced for testing: the session's own assignment stays as it was
            return self.variants.get(request.variant), False
        from clawdbot.traffic.ab import VARIANT_ATTRIBUTE

        recorded = None if meta is None else meta.attributes.get(VARIANT_ATTRIBUTE)
        variant = self.variants.choose(session_id or request.turn_id or new_turn_id(), recorded)
        return variant, session_id is not None and recorded != variant.name

    def _completion_reserve(self, request: TurnRequest) -> int:
        """Tokens kept free for the reply when fitting history: the client's max_tokens, else a share of the
        window (so a long history cannot starve the reply)."""
        if request.max_tokens is not None:
            return request.max_tokens
        return min(self.settings.default_max_tokens, self.backend.context_length // 4)

    def _too_long(self, prompt_tokens: int, reserve: int) -> ContextLengthExceededError:
        return ContextLengthExceededError(
            f"This model's maximum context length is {self.backend.context_length} tokens. However, you "
            f"requested {prompt_tokens + reserve} tokens ({prompt_tokens} in the messages, {reserve} in the "
            "completion). Please reduce the length of the messages or completion.",
            param="messages",
        )

    # ------------------------------------------------------------------ running
    def backend_for(self, turn: PreparedTurn) -> InferenceBackend:
        return self.backend if self.variants is None else self.variants.get(turn.variant).backend

    def complete(self, turn: PreparedTurn) -> TurnResult:
        completion = self.backend_for(turn).generate(turn.context, turn.params)
        return self._conclude(turn, completion.text, completion.finish_reason, completion.prompt_tokens,
                              completion.completion_tokens, cached_tokens=completion.cached_tokens,
                              model_session=completion.model_session, logprobs=completion.logprobs)

    def stream(self, turn: PreparedTurn) -> Iterator[StreamDelta]:
        """Yield deltas; the turn is recorded after the last one (not at all if the consumer stops early)."""
        pieces: list[str] = []
        last = StreamDelta(text="")
        first_token_ms: float | None = None
        for delta in self.backend_for(turn).stream(turn.context, turn.params):
            if first_token_ms is None and delta.text:
                first_token_ms = (time.perf_counter() - turn.started) * 1000
            pieces.append(delta.text)
            last = delta
            if delta.finish_reason is None:
                yield delta
        self._conclude(turn, "".join(pieces), last.finish_reason or "stop", last.prompt_tokens,
                       last.completion_tokens, first_token_ms, last.cached_tokens, last.model_session)
        yield last

    def stream_ids(self, turn: PreparedTurn) -> tuple[Iterator[int | StreamDelta], Callable[[], Detokenizer]] | None:
        """The reply's token ids, then its final delta (empty text, finish reason and counts), and a factory of
        detokenizers that turn those ids into the reply's text: the text is left to the caller, who makes it on
        another thread (``clawdbot.inference.token_ids``). ``None`` where the backend streams text only (then use
        :meth:`stream`). As with :meth:`stream`, the turn is recorded, with the text of all its ids decoded at
        once, before the final delta, and not at all if the consumer stops early."""
        ids = self.backend_for(turn).stream_ids(turn.context, turn.params)
        return None if ids is None else (self._stream_ids(turn, ids), ids.new_detokenizer)

    def _stream_ids(self, turn: PreparedTurn, stream: TokenIdStream) -> Iterator[int | StreamDelta]:
        ids: list[int] = []
        first_token_ms: float | None = None
        tokens = iter(stream)
        try:
            for token in tokens:
                if first_token_ms is None:
                    first_token_ms = (time.perf_counter() - turn.started) * 1000
                ids.append(token)
                yield token
        finally:
            tokens.close()  # type: ignore[attr-defined]  # stopped early: the model's loop ends on this thread
        self._conclude(turn, stream.new_detokenizer().extend(ids), stream.finish_reason, stream.prompt_tokens,
                       stream.completion_tokens, first_token_ms, stream.cached_tokens)
        yield StreamDelta(text="", finish_reason=stream.finish_reason, prompt_tokens=stream.prompt_tokens,
                          completion_tokens=stream.completion_tokens, cached_tokens=stream.cached_tokens)

    def _conclude(self, turn: PreparedTurn, text: str, finish_reason: str, prompt_tokens: int,
                  completion_tokens: int, first_token_ms: float | None = None, cached_tokens: int = 0,
                  model_session: str | None = None,
                  logprobs: tuple[TokenLogprob, ...] | None = None) -> TurnResult:
        """The finished turn's result, recorded, then told to the observers: how every way of running a turn ends."""
        result = TurnResult(turn, text, finish_reason, prompt_tokens, completion_tokens,
                            (time.perf_counter() - turn.started) * 1000, first_token_ms, cached_tokens,
                            model_session, logprobs)
        self.record(result)
        self._notify(result)
        return result

    def _notify(self, result: TurnResult) -> None:
        """Tell the observers; the reply is already made, so an observer's failure is logged, never raised."""
        for observer in self.observers:
            try:
                observer(result)
            except Exception:
                logger.warning("turn observer %r failed", observer, exc_info=True)

    def record(self, result: TurnResult) -> None:
        """Append the new messages and the reply as one atomic write (no-op for stateless turns)."""
        turn = result.turn
        if turn.session_id is None:
            return
        facts: dict[str, Any] = {
            "model": turn.model,
            "finish_reason": result.finish_reason,
            "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.completion_tokens,
            "latency_ms": round(result.latency_ms, 3),
            "variant": turn.variant,
        }
        if result.first_token_ms is not None:
            facts["first_token_ms"] = round(result.first_token_ms, 3)
        if turn.context_start is not None:  # the next turn starts its context there too (clawdbot.chat.history)
            facts[START_FACT] = turn.context_start
        if result.cached_tokens:
            facts["cached_tokens"] = result.cached_tokens
        if result.model_session:  # the next turn runs there too (no write of its own)
            facts[MODEL_SESSION_FACT] = result.model_session
        entries = [NewEntry(m.role, m.content, turn_id=turn.turn_id) for m in turn.new_entries]
        entries.append(NewEntry("assistant", result.text, turn_id=turn.turn_id, attributes=facts))
        self.store.append(turn.session_id, entries, create=turn.create_session, owner=turn.owner)
        if turn.record_variant:  # first turn of the session: make its assignment sticky
            from clawdbot.traffic.ab import VARIANT_ATTRIBUTE

            self.store.update_attributes(turn.session_id, {VARIANT_ATTRIBUTE: turn.variant})
        logger.debug("recorded turn %s in session %s", turn.turn_id, turn.session_id)


def _new_messages(messages: Sequence[ChatMessage]) -> list[ChatMessage]:
    """The non-system messages after the request's last assistant message: what this turn adds."""
    last_assistant = max((i for i, m in enumerate(messages) if m.role == "assistant"), default=-1)
    return [m for m in messages[last_assistant + 1:] if m.role not in SYSTEM_ROLES]


def _check_owner(session_owner: str | None, caller: str | None, session_id: str) -> None:
    from clawdbot.sessions.exceptions import SessionNotFoundError

    if session_owner is not None and session_owner != caller:
        # Same answer as for a missing session: one key cannot even learn another key's session exists.
        raise SessionNotFoundError(f"No session with id '{session_id}'.", param="session_id")
