"""A session that outgrows the model's window keeps its context's start for several turns (``clawdbot.chat.history``),
so each prompt continues the last one and the engine's prefix cache can reuse it; on every store engine, since the
start is recorded with each turn's reply."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from bench.instant import InstantBackend
from clawdbot.chat.history import START_FACT
from clawdbot.chat.service import ChatService, TurnRequest
from clawdbot.config.settings import Settings
from clawdbot.inference.types import ChatMessage

if TYPE_CHECKING:
    from pathlib import Path

    from clawdbot.sessions.base import SessionStore

TURNS = 30
MAX_TOKENS = 64


@pytest.fixture(scope="module")
def backend() -> InstantBackend:
    return InstantBackend()


def _run_session(store: SessionStore, backend: InstantBackend, settings: Settings,
                 session_id: str) -> tuple[list[list[ChatMessage]], list[ChatMessage]]:
    """``TURNS`` turns of one session; (each turn's context, everything stored)."""
    chat = ChatService(store, backend, settings)
    store.create(session_id, attributes={"system_prompt": "Be brief."})
    contexts = []
    for i in range(TURNS):
        question = f"Question {i}: what about " + "the mountains " * (i % 4 + 1)
        turn = chat.prepare(TurnRequest(messages=[ChatMessage("user", question)], max_tokens=MAX_TOKENS,
                                        session_id=session_id))
        assert turn.prompt_tokens + MAX_TOKENS <= backend.context_length
        assert turn.prompt_tokens == backend.count_prompt_tokens(turn.context)
        chat.complete(turn)
        contexts.append(turn.context)
    stored = [ChatMessage(e.role, e.content) for e in store.read(session_id, limit=1000).entries]
    return contexts, stored


def _continued(contexts: list[list[ChatMessage]], stored: list[ChatMessage]) -> int:
    """Turns whose context is the last turn's, its reply, and the new question: a prompt that continues."""
    replies = [m for m in stored if m.role == "assistant"]
    return sum(contexts[i] == [*contexts[i - 1], replies[i - 1], contexts[i][-1]] for i in range(1, len(contexts)))


def test_a_long_session_keeps_its_start_for_several_turns(store: SessionStore, backend: InstantBackend,
                                                          tmp_path: Path) -> None:
    # GIVEN a session far longer than the window, with the default slack, and the same without slack
    contexts, stored = _run_session(store, backend, Settings(data_dir=tmp_path), "sess_slack")
    greedy, greedy_stored = _run_session(store, backend, Settings(data_dir=tmp_path, context_slack=0), "sess_greedy")
    # THEN the session had to drop history (its context holds a fraction of it)
    assert len(contexts[-1]) < len(stored) // 2
    # AND with the slack most turns continue the last turn's prompt, without it almost none past the first few
    assert _continued(contexts, stored) >= TURNS * 2 // 3
    assert _continued(greedy, greedy_stored) < _continued(contexts, stored) // 2
    # AND whatever the start, the history kept is the newest part, from a question, system prompt first
    for context in contexts:
        kept = context[1:-1]
        assert context[0] == ChatMessage("system", "Be brief.")
        assert not kept or (kept == stored[stored.index(kept[0]):][:len(kept)] and kept[0].role == "user")
    # AND each turn's reply records where its context started: the seq of that turn's first history entry
    entries = store.read("sess_slack", limit=1000).entries
    start = entries[-1].attributes[START_FACT]
    first = contexts[-1][1]
    assert entries[start].seq == start and (entries[start].role, entries[start].content) == (first.role, first.content)
    # AND no turn wrote anything but its messages: the start travels with the reply
    assert entries[-1].seq == 2 * TURNS - 1


def test_a_remembered_start_that_no_longer_fits_moves_on(store: SessionStore, backend: InstantBackend,
                                                         tmp_path: Path) -> None:
    # GIVEN a long session that remembers a start
    _run_session(store, backend, Settings(data_dir=tmp_path), "sess_move")
    start = store.read_recent("sess_move", 1)[0].attributes[START_FACT]
    # WHEN the next turn asks for a much longer reply, so that start no longer fits
    chat = ChatService(store, backend, Settings(data_dir=tmp_path))
    turn = chat.prepare(TurnRequest(messages=[ChatMessage("user", "One more?")], max_tokens=300,
                                    session_id="sess_move"))
    # THEN it still fits, starting later, and the new start is recorded with the turn
    assert turn.prompt_tokens + 300 <= backend.context_length
    assert turn.context_start is not None and turn.context_start > start
    chat.complete(turn)
    assert store.read_recent("sess_move", 1)[0].attributes[START_FACT] == turn.context_start


def test_a_short_session_remembers_nothing(store: SessionStore, backend: InstantBackend, tmp_path: Path) -> None:
    chat = ChatService(store, backend, Settings(data_dir=tmp_path))
    store.create("sess_short")
    for question in ("Hi!", "And then?"):
        chat.complete(chat.prepare(TurnRequest(messages=[ChatMessage("user", question)], max_tokens=MAX_TOKENS,
                                               session_id="sess_short")))
    assert not any(START_FACT in e.attributes for e in store.read("sess_short").entries)
