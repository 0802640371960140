"""The chat service reads a session's history only as far back as can fit (a performance fix measured by
``bench.overhead`` and ``bench.history``); the context it builds must be the one a read of the whole
``history_window`` gives."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from bench.instant import InstantBackend
from clawdbot.chat.service import ChatService, TurnRequest
from clawdbot.config.settings import Settings
from clawdbot.inference.types import ChatMessage
from clawdbot.sessions.context import fit_context
from clawdbot.sessions.sqlite import SQLiteSessionStore
from clawdbot.sessions.types import NewEntry

if TYPE_CHECKING:
    from pathlib import Path

QUESTION = "What should I pack for the evenings up there?"


@pytest.fixture(scope="module")
def backend() -> InstantBackend:
    return InstantBackend()


@pytest.mark.parametrize("turns", [0, 2, 7, 40])
@pytest.mark.parametrize("window", [6, 64])
@pytest.mark.parametrize("max_tokens", [16, 300, 480])
def test_the_context_is_the_one_the_whole_window_gives(tmp_path: Path, backend: InstantBackend, turns: int,
                                                       window: int, max_tokens: int) -> None:
    # GIVEN a session of `turns` turns whose messages vary in length, one of them an unanswered user message
    store = SQLiteSessionStore(tmp_path)
    store.create("sess_read")
    entries = []
    for i in range(turns):
        entries.append(NewEntry("user", f"Question {i}: " + "tell me more about mountains " * (i % 5 + 1)))
        if i % 7 != 3:
            entries.append(NewEntry("assistant", f"Answer {i}: " + "pack warm layers " * (i % 3 + 1)))
    if entries:
        store.append("sess_read", entries)
    # (no slack: the longest tail that fits, which the slack's shorter fit reads the same way)
    chat = ChatService(store, backend, Settings(data_dir=tmp_path, history_window=window, context_slack=0))

    # WHEN a turn is prepared
    turn = chat.prepare(TurnRequest(messages=[ChatMessage("user", QUESTION)], max_tokens=max_tokens,
                                    session_id="sess_read"))

    # THEN its context and prompt size are exactly those fitted over the whole window
    window_entries = store.read_recent("sess_read", window)
    expected = fit_context([], [ChatMessage(e.role, e.content) for e in window_entries],
                           [ChatMessage("user", QUESTION)], backend.context_length - max_tokens,
                           backend.count_prompt_tokens)
    assert (turn.context, turn.prompt_tokens) == expected
    store.close()
