"""``Idempotency-Key``: a client retrying a POST gets the first response, never a second turn.

Against ``clawdbot serve`` on every store (the keys' records live in the store's own engine); the crash cases kill
the server for real and start it again on the same data.
"""

from __future__ import annotations

import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from clawdbot.config.settings import DEFAULT_MODEL_DIR
from clawdbot.reliability.consistency import check_sessions, read_transcript
from tests.fixtures.probes import no_end_bias

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    import httpx

    from clawdbot.sessions.base import SessionStore
    from tests.reliability.conftest import Backing, Figures, Serve


def chat(model: str, content: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "max_tokens": 4, "temperature": 0, "messages": [{"role": "user", "content": content}],
            **extra}


def stream_events(client: httpx.Client, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, list[str],
                                                                                              dict[str, str]]:
    with client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as response:
        events = [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]
    return response.status_code, events, dict(response.headers)


def streamed_text(events: list[str]) -> str:
    chunks = [json.loads(e) for e in events if e != "[DONE]"]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def test_a_retried_post_gets_the_first_answer_and_stores_one_turn(
        backing: Backing, serve: Callable[..., Serve], model_id: str, figures: Figures) -> None:
    client = serve(backing.env).client()
    session_id = client.post("/v1/sessions", json={}).json()["id"]
    headers = {"x-session-id": session_id, "idempotency-key": str(uuid.uuid4())}
    body = chat(model_id, "Hello, who are you?", temperature=1.0)  # sampled: a second run would differ

    first = client.post("/v1/chat/completions", json=body, headers=headers)
    retries = [client.post("/v1/chat/completions", json=body, headers=headers) for _ in range(3)]
    figures.add("idempotency_retries", len(retries))

    assert first.status_code == 200 and "idempotent-replayed" not in first.headers
    for retry in retries:
        assert retry.status_code == 200 and retry.headers["idempotent-replayed"] == "true"
        assert retry.json() == first.json()
        assert retry.headers["x-session-id"] == session_id
    entries = read_transcript(backing.make_store(), session_id)
    assert [(e.role, e.turn_id) for e in entries] == [("user", first.json()["id"]), ("assistant", first.json()["id"])]
    assert entries[1].content == first.json()["choices"][0]["message"]["content"]

    # A streamed request replays as a stream, with the same text.
    stream_headers = {**headers, "idempotency-key": str(uuid.uuid4())}
    streamed = chat(model_id, "And a streamed one?", stream=True, stream_options={"include_usage": True})
    status, events, _ = stream_events(client, streamed, stream_headers)
    status_again, events_again, again_headers = stream_events(client, streamed, stream_headers)
    assert status == status_again == 200 and events[-1] == events_again[-1] == "[DONE]"
    assert again_headers["idempotent-replayed"] == "true"
    assert streamed_text(events_again) == streamed_text(events)
    assert json.loads(events_again[-2])["usage"] == json.loads(events[-2])["usage"]
    assert len(read_transcript(backing.make_store(), session_id)) == 4


def test_concurrent_requests_with_one_key_run_one_turn(serve: Callable[..., Serve], backing: Backing,
                                                       model_id: str, figures: Figures) -> None:
    client = serve(backing.env).client()
    session_id = client.post("/v1/sessions", json={}).json()["id"]
    headers = {"x-session-id": session_id, "idempotency-key": "same-key-" + uuid.uuid4().hex}
    body = chat(model_id, "Tell me a story.", max_tokens=64)

    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda _: client.post("/v1/chat/completions", json=body, headers=headers),
                                range(10)))
    figures.add("idempotency_concurrent_requests", len(answers))

    # THEN one request ran the turn; each other one was told to wait (409) or got its answer back
    ran = [a for a in answers if a.status_code == 200 and "idempotent-replayed" not in a.headers]
    assert len(ran) == 1
    for answer in answers:
        if answer.status_code == 409:
            assert answer.json()["error"]["code"] == "idempotency_key_in_use" and answer.headers["retry-after"]
        else:
            assert answer.status_code == 200 and answer.json() == ran[0].json()
    late = client.post("/v1/chat/completions", json=body, headers=headers)
    assert late.status_code == 200 and late.json() == ran[0].json()
    report = check_sessions(backing.make_store(), [session_id])
    assert report.ok and report.turns == 1, report.problems


def test_a_key_reused_for_another_request_is_refused(serve: Callable[..., Serve], sqlite_backing: Backing,
                                                     model_id: str) -> None:
    client = serve(sqlite_backing.env).client()
    session_id = client.post("/v1/sessions", json={}).json()["id"]
    headers = {"x-session-id": session_id, "idempotency-key": uuid.uuid4().hex}
    assert client.post("/v1/chat/completions", json=chat(model_id, "one"), headers=headers).status_code == 200

    other = client.post("/v1/chat/completions", json=chat(model_id, "two"), headers=headers)
    moved = client.post("/v1/chat/completions", json=chat(model_id, "one"),
                        headers={**headers, "x-session-id": client.post("/v1/sessions", json={}).json()["id"]})

    for refused in (other, moved):
        assert refused.status_code == 422 and refused.json()["error"]["code"] == "idempotency_key_reused"
    assert len(read_transcript(sqlite_backing.make_store(), session_id)) == 2
    bad = client.post("/v1/chat/completions", json=chat(model_id, "x"), headers={"idempotency-key": "a b"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_idempotency_key"


def test_a_failed_request_frees_its_key_for_the_retry(serve: Callable[..., Serve], sqlite_backing: Backing,
                                                      model_id: str) -> None:
    client = serve(sqlite_backing.env).client()
    session_id = "sess_" + uuid.uuid4().hex
    headers = {"x-session-id": session_id, "idempotency-key": uuid.uuid4().hex}
    body = chat(model_id, "Are you there?")
    # GIVEN a request that fails (its session does not exist yet)
    assert client.post("/v1/chat/completions", json=body, headers=headers).status_code == 404
    # WHEN the session appears and the client retries with the same key
    assert client.post("/v1/sessions", json={"id": session_id}).status_code == 201
    retry = client.post("/v1/chat/completions", json=body, headers=headers)
    # THEN the retry ran the turn: a failure records nothing under the key
    assert retry.status_code == 200 and "idempotent-replayed" not in retry.headers
    assert len(read_transcript(sqlite_backing.make_store(), session_id)) == 2


# ------------------------------------------------------------------------------------------ crashes
def test_a_server_killed_mid_turn_stores_nothing_and_the_key_frees_up_after_its_lock(
        serve: Callable[..., Serve], sqlite_backing: Backing, model_id: str, tmp_path: Path, figures: Figures) -> None:
    env = {**sqlite_backing.env, "CLAWDBOT_IDEMPOTENCY_LOCK_SECONDS": "3", "CLAWDBOT_DEFAULT_MAX_TOKENS": "400"}
    server = serve(env)
    client = server.client()
    session_id = client.post("/v1/sessions", json={}).json()["id"]
    headers = {"x-session-id": session_id, "idempotency-key": uuid.uuid4().hex}
    # (its end-of-sequence tokens banned: a reply that ended within milliseconds would be stored before the kill)
    body = chat(model_id, "Write a very long answer.", max_tokens=400, stream=True,
                logit_bias=no_end_bias(DEFAULT_MODEL_DIR))

    # GIVEN a keyed streamed turn that is generating; WHEN the server is killed (SIGKILL) mid-stream
    with client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if '"content": "' in line and '"content": ""' not in line:
                server.kill()
                break
    figures.add("faults_injected")
    figures.add("process_kills")
    # THEN nothing of the turn was stored
    store = sqlite_backing.make_store()
    assert read_transcript(store, session_id) == []

    # WHEN the server is back on the same data: the dead request's lock still holds the key for a while ...
    revived = serve(env, port=server.port)
    client = revived.client()
    held = client.post("/v1/chat/completions", json=body, headers=headers)
    assert held.status_code == 409 and int(held.headers["retry-after"]) >= 1
    # ... and once it lapses the retry runs the turn, once
    deadline = time.monotonic() + 30
    while True:
        status, events, _ = stream_events(client, body, headers)
        if status != 409 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert status == 200 and events[-1] == "[DONE]"
    report = check_sessions(store, [session_id])
    assert report.ok and report.turns == 1, report.problems
    figures.add("faults_survived")


def test_a_turn_stored_by_a_request_that_died_before_recording_its_answer_is_not_run_again(
        serve: Callable[..., Serve], sqlite_backing: Backing, model_id: str) -> None:
    from clawdbot.api.idempotency import derived_turn_id, fingerprint
    from clawdbot.api.schemas import ChatCompletionRequest
    from clawdbot.sessions.types import NewEntry

    client = serve(sqlite_backing.env).client()
    session_id = client.post("/v1/sessions", json={}).json()["id"]
    key = uuid.uuid4().hex
    body = chat(model_id, "Did this get through?")
    # GIVEN what a process leaves that appended the turn and died before recording the answer under the key
    # (no record: its lock has lapsed), with the turn id that key and request derive
    fields = {"body": ChatCompletionRequest(**body).model_dump(mode="json"), "session_id": session_id,
              "variant": None}
    turn_id = derived_turn_id(None, key, fingerprint(fields))
    store: SessionStore = sqlite_backing.make_store()
    store.append(session_id, [NewEntry("user", "Did this get through?", turn_id=turn_id),
                              NewEntry("assistant", "Yes, it did.", turn_id=turn_id,
                                       attributes={"model": model_id, "finish_reason": "stop",
                                                   "prompt_tokens": 12, "completion_tokens": 4})])

    # WHEN the client retries with its key
    retry = client.post("/v1/chat/completions", json=body, headers={"x-session-id": session_id,
                                                                      "idempotency-key": key})
    # THEN it gets the stored turn back and nothing runs again
    assert retry.status_code == 200 and retry.headers["idempotent-replayed"] == "true"
    answer = retry.json()
    assert (answer["id"], answer["choices"][0]["message"]["content"]) == (turn_id, "Yes, it did.")
    assert answer["usage"] == {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16,
                               "prompt_tokens_details": {"cached_tokens": 0}}
    assert len(read_transcript(store, session_id)) == 2
