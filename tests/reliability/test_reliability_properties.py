"""Property tests (Hypothesis): every store engine behaves like one simple model, and the context a turn is built
from always fits the model's window, keeps the system prompt and the newest message, and drops only the oldest
history.

The store machine drives each real engine (an SQLite file, redis-server, DynamoDB Local) through random sequences
of creates, appends, reads, attribute updates and deletes, checking every answer against a dict-and-list model.
The context properties run ``ChatService.prepare`` on a real store with the shipped model's real tokenizer.
Budgets are small (CI time); ``HYPOTHESIS_PROFILE=thorough`` runs many more examples.
"""

from __future__ import annotations

import os
import uuid
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from clawdbot.inference.exceptions import ContextLengthExceededError
from clawdbot.inference.types import ChatMessage
from clawdbot.sessions.types import NewEntry
from tests.reliability.conftest import STORES, backing_for

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from clawdbot.sessions.base import SessionStore
    from tests.reliability.conftest import Figures

THOROUGH = os.environ.get("HYPOTHESIS_PROFILE") == "thorough"
STORE_RUNS = 60 if THOROUGH else 6
STORE_STEPS = 40 if THOROUGH else 20
CONTEXT_EXAMPLES = 400 if THOROUGH else 40

# Any text a client can send: every Unicode scalar value (no lone surrogates: JSON cannot carry them).
texts = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
attribute_values = st.one_of(st.integers(-10**6, 10**6), texts, st.booleans(), st.none())


class StoreModel(RuleBasedStateMachine):
    """A store engine against a model: {session id: [entries]} plus attributes."""

    make_store: Callable[[], SessionStore]
    steps = 0

    def __init__(self) -> None:
        super().__init__()
        self.store = type(self).make_store()
        self.model: dict[str, list[tuple[str, str, str | None]]] = {}
        self.attributes: dict[str, dict[str, Any]] = {}

    sessions = Bundle("sessions")

    @rule(target=sessions, chosen=st.booleans())
    def create(self, chosen: bool) -> str:
        session_id = self.store.create(f"prop-{uuid.uuid4().hex}" if chosen else None).session_id
        self.model[session_id] = []
        self.attributes[session_id] = {}
        return session_id

    @rule(session=sessions, batch=st.lists(st.tuples(st.sampled_from(["user", "assistant", "system"]), texts),
                                           min_size=1, max_size=4), tag=st.booleans())
    def append(self, session: str, batch: list[tuple[str, str]], tag: bool) -> None:
        turn_id = f"chatcmpl-{uuid.uuid4().hex[:12]}" if tag else None
        entries = [NewEntry(role, content, turn_id=turn_id) for role, content in batch]
        if session not in self.model:
            with pytest.raises(Exception, match="No session"):
                self.store.append(session, entries)
            return
        stored = self.store.append(session, entries)
        start = len(self.model[session])
        assert [e.seq for e in stored] == list(range(start, start + len(batch)))
        self.model[session] += [(role, content, turn_id) for role, content in batch]

    @rule(session=sessions, after=st.one_of(st.none(), st.integers(-1, 12)), limit=st.integers(1, 8))
    def read_page(self, session: str, after: int | None, limit: int) -> None:
        if session not in self.model:
            assert self.store.get_optional(session) is None
            return
        page = self.store.read(session, after=after, limit=limit)
        expected = [(seq, *e) for seq, e in enumerate(self.model[session]) if after is None or seq > after][:limit]
        assert [(e.seq, e.role, e.content, e.turn_id) for e in page.entries] == expected
        last = expected[-1][0] if expected else None
        more = last is not None and last + 1 < len(self.model[session])
        assert page.next_after == (last if more else None)

    @rule(session=sessions, limit=st.integers(1, 10))
    def read_recent(self, session: str, limit: int) -> None:
        recent = self.store.read_recent(session, limit)
        entries = self.model.get(session, [])
        expected = [(seq, *e) for seq, e in enumerate(entries)][-limit:]
        assert [(e.seq, e.role, e.content, e.turn_id) for e in recent] == expected

    @rule(session=sessions, values=st.dictionaries(st.sampled_from(["title", "variant", "n", "x"]),
                                                   attribute_values, min_size=1, max_size=3))
    def update_attributes(self, session: str, values: dict[str, Any]) -> None:
        if session not in self.model:
            with pytest.raises(Exception, match="No session"):
                self.store.update_attributes(session, values)
            return
        self.attributes[session].update(values)
        assert self.store.update_attributes(session, values).attributes == self.attributes[session]

    @rule(session=sessions)
    def delete(self, session: str) -> None:
        assert self.store.delete(session) is (session in self.model)
        self.model.pop(session, None)
        self.attributes.pop(session, None)
        assert self.store.get_optional(session) is None and self.store.read_recent(session, 5) == []

    @invariant()
    def metadata_matches(self) -> None:
        type(self).steps += 1
        for session, entries in self.model.items():
            meta = self.store.get(session)
            assert meta.next_seq == len(entries) and meta.attributes == self.attributes[session]

    def teardown(self) -> None:
        for session in self.model:
            self.store.delete(session)
        self.store.close()


@pytest.mark.parametrize("kind", STORES)
def test_every_store_engine_behaves_like_the_model(kind: str, request: pytest.FixtureRequest, tmp_path: Path,
                                                   model_dir: Path, figures: Figures, aws_test_env: None) -> None:
    backing = backing_for(kind, request, tmp_path / "data", model_dir)
    machine = type(f"StoreModel_{kind}", (StoreModel,), {"make_store": staticmethod(backing.make_store),
                                                         "steps": 0})
    run_state_machine_as_test(machine, settings=settings(
        max_examples=STORE_RUNS, stateful_step_count=STORE_STEPS, deadline=None, derandomize=not THOROUGH,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
    figures.add("property_store_steps", machine.steps)


# ------------------------------------------------------------------------------------------------ the context
@pytest.fixture(scope="module")
def chat(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``ChatService`` on an SQLite store, counting tokens with the shipped model's tokenizer and chat template."""
    from bench.instant import InstantBackend
    from clawdbot.chat.service import ChatService
    from clawdbot.config.settings import Settings
    from clawdbot.sessions.sqlite import SQLiteSessionStore

    data = tmp_path_factory.mktemp("context")
    settings_ = Settings(data_dir=data, history_window=24, default_max_tokens=64)
    return ChatService(SQLiteSessionStore(data), InstantBackend(model_dir), settings_)


words = st.text(st.sampled_from("abcdefgh ijklmnop qrstuvwxyz.,!?é日"), min_size=1, max_size=400)
histories = st.lists(st.tuples(words, words), max_size=14)


@given(history=histories, system=st.one_of(st.none(), words), question=words,
       max_tokens=st.one_of(st.none(), st.integers(1, 600)), continuing=st.booleans())
@settings(max_examples=CONTEXT_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow],
          derandomize=not THOROUGH)
def test_a_turns_context_fits_keeps_the_system_prompt_and_the_newest_message_and_drops_only_the_oldest(
        chat: Any, history: list[tuple[str, str]], system: str | None, question: str, max_tokens: int | None,
        continuing: bool) -> None:
    from clawdbot.chat.service import TurnRequest

    store, backend = chat.store, chat.backend
    window = backend.context_length
    session_id = store.create(attributes={"system_prompt": system} if system else {}).session_id
    stored: list[ChatMessage] = []
    for user, reply in history:
        turn_id = f"chatcmpl-{uuid.uuid4().hex[:12]}"
        store.append(session_id, [NewEntry("user", user, turn_id=turn_id), NewEntry("assistant", reply, turn_id)])
        stored += [ChatMessage("user", user), ChatMessage("assistant", reply)]
    newest = ChatMessage("user", question)
    request = TurnRequest(messages=[newest], max_tokens=max_tokens,
                          session_id=session_id if continuing or history else None)
    try:
        turn = chat.prepare(request)
    except ContextLengthExceededError:
        # Only when the system prompt and the new message alone leave no room for the reply.
        alone = ([ChatMessage("system", system)] if system and request.session_id else []) + [newest]
        reserve = max_tokens or (min(chat.settings.default_max_tokens, window // 4) if request.session_id else 1)
        assert backend.count_prompt_tokens(alone) + reserve > window
        event("refused: no room even without history")
        return
    context = turn.context
    # The context never exceeds the window, reply included, and the count is the real one.
    assert turn.prompt_tokens == backend.count_prompt_tokens(context)
    assert turn.prompt_tokens + turn.params.max_tokens <= window
    # The newest message is always last, the system prompt always first.
    assert context[-1] == newest
    if system and request.session_id:
        assert context[0] == ChatMessage("system", system)
    # What history is kept is the newest part of it, starting on a question, never a hole in the middle.
    kept = context[(1 if system and request.session_id else 0):-1]
    if not request.session_id:
        assert kept == []
    elif kept:
        assert kept == stored[len(stored) - len(kept):] and kept[0].role == "user"
        assert len(kept) <= chat.settings.history_window
    event("history: all kept" if len(kept) == len(stored) else "history: oldest dropped")
