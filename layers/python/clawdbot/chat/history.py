"""A session's history for its next turn's context: read only as far back as can fit, and started where the last
turn started while that still fits.

Once a session outgrows the model's window, keeping the longest tail that fits drops its oldest turn or two on
every turn, so every prompt starts differently after the system prompt and the engine's prefix cache
(``clawdbot.inference.onnx.prefix_cache``) can reuse nothing of the last turn's. Here a session that must drop
history drops ``context_slack`` of the window more than it must (of the prompt budget, and of the history
window's entries), and each turn records where its context started with its reply (the reply entry's
:data:`START_FACT`, the seq of the first history entry kept; written with the turn, so it costs no write of its
own): the next turns start there again as long as that fits, each prompt continuing the last one, and only then is
the start moved on, by another slack's worth. The price is up to that share less history in the context;
``context_slack = 0`` keeps the longest tail every turn.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from clawdbot.inference.exceptions import ContextLengthExceededError
from clawdbot.inference.types import ChatMessage
from clawdbot.sessions.context import fit_context

if TYPE_CHECKING:
    from clawdbot.inference.base import InferenceBackend
    from clawdbot.sessions.base import SessionStore
    from clawdbot.sessions.types import TranscriptEntry

#: History entries the first context read asks for, at least, and the tokens an entry is guessed to take when
#: sizing that read from the model's context length (see :func:`longest_fit`).
FIRST_READ = 8
TOKENS_PER_ENTRY_GUESS = 32
#: The fact of a turn's reply entry that says where its context's history started (a seq).
START_FACT = "context_start"


@dataclass(frozen=True, slots=True)
class FittedHistory:
    """The context (system + kept history + new messages), its prompt tokens, and where its history starts
    (the seq to remember; ``None`` when nothing needs remembering: all of the session fits, or none of it), and
    the facts the session's last reply recorded (its model session, its variant...), read with the history."""

    context: list[ChatMessage]
    prompt_tokens: int
    start_seq: int | None = None
    last_facts: dict[str, Any] = field(default_factory=dict)


def fit_history(store: SessionStore, backend: InferenceBackend, session_id: str, system: list[ChatMessage],
                new: list[ChatMessage], budget: int, *, window: int, slack: float) -> FittedHistory:
    """The context of a session's next turn: from the start the last turn recorded if it still fits, else the
    longest tail that fits, or, when that already drops history and ``slack`` is set, a tail shorter by the
    slack; with the facts of the session's last reply, which the first read brings anyway (the model session
    the turn continues: ``clawdbot.chat.service``)."""
    newest = NewestEntries(store, session_id)
    entries = newest.read(first_read(backend, window))
    last_facts = next((e.attributes for e in reversed(entries) if e.role == "assistant"), {})
    return replace(_fit(newest, entries, backend, system, new, budget, window, slack), last_facts=dict(last_facts))


def _fit(newest: NewestEntries, entries: list[TranscriptEntry], backend: InferenceBackend,
         system: list[ChatMessage], new: list[ChatMessage], budget: int, window: int, slack: float) -> FittedHistory:
    start = _recorded_start(entries) if slack > 0 else None
    if start is not None:
        since = entries[-1].seq + 1 - start
        if 0 < since <= window:
            tail = newest.read(since)
            if tail and tail[0].seq == start and tail[0].role == "user":
                context = [*system, *_messages(tail), *new]
                tokens = backend.count_prompt_tokens(context)
                if tokens <= budget:
                    return FittedHistory(context, tokens, start)
    fitted, first = longest_fit(newest, backend, system, new, budget, window)
    if slack <= 0 or first is None or first.seq == 0:  # nothing dropped: every turn starts at the beginning
        return FittedHistory(*fitted)
    try:
        shorter, first = longest_fit(newest, backend, system, new, budget - int(budget * slack),
                                     max(2, window - int(window * slack)))
    except ContextLengthExceededError:  # the new messages need the slack too: this turn keeps the longest tail
        return FittedHistory(*fitted)
    return FittedHistory(*shorter, first.seq if first is not None else None)


class NewestEntries:
    """A session's newest entries, read once for every smaller count asked for after."""

    def __init__(self, store: SessionStore, session_id: str) -> None:
        self.store = store
        self.session_id = session_id
        self._entries: list[TranscriptEntry] = []
        self._asked = 0

    def read(self, limit: int) -> list[TranscriptEntry]:
        """The newest ``limit`` entries (fewer if the session has fewer), oldest first."""
        if limit > self._asked:
            self._entries, self._asked = self.store.read_recent(self.session_id, limit), limit
        return self._entries[-limit:] if limit < len(self._entries) else self._entries


def first_read(backend: InferenceBackend, window: int) -> int:
    """Entries the first context read asks for: about as many as the context could hold."""
    return min(window, max(FIRST_READ, backend.context_length // TOKENS_PER_ENTRY_GUESS))


def longest_fit(newest: NewestEntries, backend: InferenceBackend, system: list[ChatMessage],
                new: list[ChatMessage], budget: int,
                window: int) -> tuple[tuple[list[ChatMessage], int], TranscriptEntry | None]:
    """``fit_context`` over the newest ``window`` entries, read only as far back as can fit: ``((context, prompt
    tokens), first kept entry or None)``.

    A small model's context holds a few entries of a long session, so the first read asks for about as many
    as the context could hold (:func:`first_read`) and reads twice as far back only while even the longest tail
    read so far fits; the answer is the one a read of the whole window gives (a tail that does not fit only grows
    longer further back), for a fraction of the rows parsed and, on DynamoDB, of the read units.
    """
    limit = first_read(backend, window)
    while True:
        entries = newest.read(limit)
        history = _messages(entries)
        context, tokens = fit_context(system, history, new, budget, backend.count_prompt_tokens)
        used = len(context) - len(system) - len(new)
        longest = next((len(history) - i for i, m in enumerate(history) if m.role != "assistant"), 0)
        if len(history) < limit or limit >= window or used < longest:
            return (context, tokens), (entries[len(entries) - used] if used else None)
        limit = min(window, limit * 2)


def _recorded_start(entries: list[TranscriptEntry]) -> int | None:
    """The context start the newest turn recorded with its reply, if any."""
    for entry in reversed(entries):
        start = entry.attributes.get(START_FACT)
        if isinstance(start, int) and not isinstance(start, bool):
            return start
        if entry.role == "assistant":
            return None  # the last reply recorded none: its context started at the beginning or slid
    return None


def _messages(entries: list[TranscriptEntry]) -> list[ChatMessage]:
    return [ChatMessage(e.role, e.content) for e in entries]
