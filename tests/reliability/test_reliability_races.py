"""Races: 50 turns at once on one session, through the HTTP API of ``clawdbot serve``, on every session store.

Every turn must be stored exactly once, the transcript must stay gap-free, and every reply must sit right after its
own question (the turn id the client got back tags both). Half the turns stream, half do not: both paths record a
turn the same way, and both must keep the invariants.
"""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from clawdbot.reliability.consistency import check_sessions, read_transcript

if TYPE_CHECKING:
    from collections.abc import Callable

    import httpx

    from tests.reliability.conftest import Backing, Figures, Serve

TURNS = 50


def one_turn(client: httpx.Client, model: str, session_id: str, question: str, stream: bool) -> tuple[int, str]:
    """POST one turn; returns (status, completion id)."""
    body: dict[str, Any] = {"model": model, "max_tokens": 3, "temperature": 0, "stream": stream,
                            "messages": [{"role": "user", "content": question}]}
    headers = {"x-session-id": session_id}
    if not stream:
        response = client.post("/v1/chat/completions", json=body, headers=headers)
        return response.status_code, response.json().get("id", "") if response.status_code == 200 else ""
    with client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as response:
        events = [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]
    if response.status_code != 200 or events[-1] != "[DONE]" or any('"error"' in e for e in events):
        return response.status_code if response.status_code != 200 else 599, ""
    return 200, json.loads(events[0])["id"]


def test_fifty_concurrent_turns_on_one_session_are_each_stored_once_in_order(
        backing: Backing, serve: Callable[..., Serve], model_id: str, figures: Figures) -> None:
    server = serve(backing.env)
    client = server.client()
    session_id = client.post("/v1/sessions", json={}).json()["id"]
    questions = [f"Question {i} ({uuid.uuid4().hex[:8]})?" for i in range(TURNS)]

    # WHEN 50 clients send their turn at the same moment, half of them streamed
    with ThreadPoolExecutor(TURNS) as pool:
        results = list(pool.map(lambda i: one_turn(client, model_id, session_id, questions[i], i % 2 == 1),
                                range(TURNS)))
    figures.add("race_turns_attempted", TURNS)

    # THEN every turn succeeded ...
    assert [status for status, _ in results] == [200] * TURNS
    store = backing.make_store()
    entries = read_transcript(store, session_id)
    figures.add("race_turns_stored", sum(1 for e in entries if e.role == "assistant"))
    # ... the transcript holds each exactly once, gap-free, as whole turns
    report = check_sessions(store, [session_id])
    assert report.ok, report.problems
    assert len(entries) == 2 * TURNS and report.turns == TURNS
    # ... and each reply follows its own question: the id the client got tags its question and its reply
    by_turn = {e.turn_id: [] for e in entries}
    for entry in entries:
        by_turn[entry.turn_id].append(entry)
    for question, (_, completion_id) in zip(questions, results, strict=True):
        user, reply = by_turn[completion_id]
        assert (user.role, user.content, reply.role) == ("user", question, "assistant")
        assert reply.seq == user.seq + 1
    meta = client.get(f"/v1/sessions/{session_id}").json()
    assert meta["message_count"] == 2 * TURNS
