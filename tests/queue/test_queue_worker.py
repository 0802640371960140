"""The worker on the sample SQS events: turns run through the shipped model, once per turn id, whatever SQS does.

In-process with a Lambda context, exactly as Lambda invokes ``functions/chat_worker/handler.py``; the stores are
real (SQLite files here, DynamoDB Local and Redis for the engine-parametrized cases).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from clawdbot.chat.service import ChatService, TurnRequest
from clawdbot.inference.types import ChatMessage
from clawdbot.queue.idempotency import key_data
from clawdbot.queue.messages import TurnMessage
from clawdbot.queue.status import TurnStatusReader
from clawdbot.testing import load_event
from tests.queue.conftest import ENGINES, MAX_TOKENS, failures, handle, lambda_context

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType

    from clawdbot.config.settings import Settings
    from clawdbot.queue.worker import TurnWorker
    from clawdbot.sessions.types import TranscriptEntry

REPO_ROOT = Path(__file__).resolve().parents[2]
ONE_TURN = load_event("sqs-chat-turn")
ONE_MESSAGE = TurnMessage.model_validate_json(ONE_TURN["Records"][0]["body"])


def transcript(worker: TurnWorker, session_id: str) -> list[TranscriptEntry]:
    return worker.chat.store.read(session_id, limit=500).entries


def status(worker: TurnWorker, message: TurnMessage) -> dict[str, Any]:
    reader = TurnStatusReader(worker.chat.store, worker.persistence, worker.window)
    return reader.outcome(message.session_id, message.turn_id, message.owner)


def messages_of(event: dict[str, Any]) -> list[TurnMessage]:
    return [TurnMessage.model_validate_json(r["body"]) for r in event["Records"]]


def test_the_lambda_handler_runs_the_sample_turn(chat_worker: ModuleType) -> None:
    # GIVEN the deployed handler module, cold-started from CLAWDBOT_* variables, and the sample's session
    chat_worker.worker.chat.store.create(ONE_MESSAGE.session_id)

    response = chat_worker.handler(load_event("sqs-chat-turn"), lambda_context())

    assert response == {"batchItemFailures": []}
    entries = transcript(chat_worker.worker, ONE_MESSAGE.session_id)
    assert [(e.role, e.turn_id) for e in entries] == [("user", ONE_MESSAGE.turn_id),
                                                      ("assistant", ONE_MESSAGE.turn_id)]
    assert entries[0].content == ONE_MESSAGE.content
    assert 1 <= entries[1].attributes["completion_tokens"] <= MAX_TOKENS


def test_a_turn_continues_its_sessions_history(worker: TurnWorker) -> None:
    # GIVEN a session that already has an exchange
    session_id = ONE_MESSAGE.session_id
    worker.chat.complete(worker.chat.prepare(TurnRequest(messages=[ChatMessage("user", "My name is Ada.")],
                                                         session_id=session_id)))
    prompt_before = worker.chat.backend.count_prompt_tokens([ChatMessage("user", ONE_MESSAGE.content)])

    handle(worker, ONE_TURN)

    entries = transcript(worker, session_id)
    assert [e.seq for e in entries] == [0, 1, 2, 3]
    assert [e.turn_id for e in entries[2:]] == [ONE_MESSAGE.turn_id] * 2
    # The prompt held the earlier exchange, not just the new message.
    assert entries[3].attributes["prompt_tokens"] > prompt_before


@pytest.mark.parametrize("engine", ENGINES)
def test_a_redelivered_message_stores_one_turn(engine: str, make_settings: Callable[..., Settings],
                                               make_worker: Callable[[Settings], TurnWorker]) -> None:
    worker = make_worker(make_settings(engine))

    first = handle(worker, load_event("sqs-chat-turn"))
    again = handle(worker, load_event("sqs-chat-turn-redelivered"))

    assert first == again == {"batchItemFailures": []}
    entries = transcript(worker, ONE_MESSAGE.session_id)
    assert [(e.role, e.turn_id) for e in entries] == [("user", ONE_MESSAGE.turn_id),
                                                      ("assistant", ONE_MESSAGE.turn_id)]
    outcome = status(worker, ONE_MESSAGE)
    assert outcome["status"] == "done"
    assert outcome["reply"] == {"role": "assistant", "content": entries[1].content}
    assert outcome["usage"]["completion_tokens"] == entries[1].attributes["completion_tokens"]


def test_a_poison_message_fails_alone_with_its_sessions_later_turns(worker: TurnWorker) -> None:
    # GIVEN a batch: a turn for session a, a malformed body and a later turn for session b, a turn for session c
    event = load_event("sqs-chat-turn-poison-batch")
    records = event["Records"]
    a_turn, b_poison, b_later, c_turn = records

    response = handle(worker, event)

    # THEN the poison record fails, and so does b's later turn (FIFO: it must not overtake the message before
    # it); a's and c's turns succeed and are stored
    assert failures(response) == [b_poison["messageId"], b_later["messageId"]]
    for record in (a_turn, c_turn):
        message = TurnMessage.model_validate_json(record["body"])
        assert [e.turn_id for e in transcript(worker, message.session_id)] == [message.turn_id] * 2
        assert status(worker, message)["status"] == "done"
    assert transcript(worker, "sess_sample_b") == []
    assert status(worker, TurnMessage.model_validate_json(b_later["body"]))["status"] == "pending"


def test_a_batch_of_only_poison_is_reported_not_raised(worker: TurnWorker) -> None:
    event = load_event("sqs-chat-turn-poison-batch")
    event["Records"] = [event["Records"][1]]
    assert failures(handle(worker, event)) == [event["Records"][0]["messageId"]]


def test_a_turn_that_can_never_succeed_is_consumed_and_reported_failed(
        make_settings: Callable[..., Settings], make_worker: Callable[..., TurnWorker]) -> None:
    # GIVEN the sample turn for a session that does not exist (deleted after the turn was queued)
    worker = make_worker(make_settings(), create_sessions=False)

    response = handle(worker, load_event("sqs-chat-turn"))

    assert response == {"batchItemFailures": []}  # retrying cannot help: not sent back to the queue
    outcome = status(worker, ONE_MESSAGE)
    assert outcome["status"] == "failed"
    assert outcome["error"]["code"] == "session_not_found"
    assert outcome["error"]["type"] == "invalid_request_error"
    assert worker.chat.store.get_optional(ONE_MESSAGE.session_id) is None  # no session was created


def test_a_prompt_too_long_for_the_model_is_reported_failed(worker: TurnWorker) -> None:
    event = load_event("sqs-chat-turn")
    long_message = ONE_MESSAGE.model_copy(update={"content": "word " * (worker.chat.backend.context_length * 2)})
    event["Records"][0]["body"] = long_message.to_body()

    assert handle(worker, event) == {"batchItemFailures": []}
    assert status(worker, long_message)["error"]["code"] == "context_length_exceeded"
    assert transcript(worker, ONE_MESSAGE.session_id) == []


def test_a_turn_held_by_another_worker_is_retried_later_not_run_twice(worker: TurnWorker) -> None:
    # GIVEN another worker is running this turn right now (its lock has a minute left)
    other = worker.persistence
    other.save_inprogress(ONE_MESSAGE.model_dump(mode="json"), remaining_time_in_millis=60_000)

    response = handle(worker, load_event("sqs-chat-turn-redelivered"))

    assert failures(response) == [ONE_TURN["Records"][0]["messageId"]]
    assert transcript(worker, ONE_MESSAGE.session_id) == []
    assert status(worker, ONE_MESSAGE)["status"] == "in_progress"


def test_a_turn_whose_worker_died_is_taken_over(worker: TurnWorker) -> None:
    import time

    # GIVEN a worker took the turn 1 ms before its Lambda timed out, and never finished
    worker.persistence.save_inprogress(ONE_MESSAGE.model_dump(mode="json"), remaining_time_in_millis=1)
    time.sleep(0.05)
    assert status(worker, ONE_MESSAGE)["status"] == "pending"  # waiting for SQS to redeliver it

    assert handle(worker, load_event("sqs-chat-turn-redelivered")) == {"batchItemFailures": []}
    assert len(transcript(worker, ONE_MESSAGE.session_id)) == 2


def test_a_turn_recorded_by_a_worker_that_died_before_marking_it_done_is_not_rerun(worker: TurnWorker) -> None:
    # GIVEN a worker appended the turn (same turn id) and died before its idempotency record said COMPLETED
    chat: ChatService = worker.chat
    chat.complete(chat.prepare(TurnRequest(messages=[ChatMessage("user", ONE_MESSAGE.content)],
                                           session_id=ONE_MESSAGE.session_id, turn_id=ONE_MESSAGE.turn_id)))
    recorded = transcript(worker, ONE_MESSAGE.session_id)

    response = handle(worker, load_event("sqs-chat-turn-redelivered"))

    assert response == {"batchItemFailures": []}
    assert transcript(worker, ONE_MESSAGE.session_id) == recorded  # nothing appended
    outcome = status(worker, ONE_MESSAGE)
    assert outcome["reply"]["content"] == recorded[1].content
    assert worker.persistence.get_record(key_data(None, ONE_MESSAGE.session_id, ONE_MESSAGE.turn_id)).status \
        == "COMPLETED"


@pytest.mark.parametrize("engine", ["sqlite", "dynamodb"])
def test_two_workers_given_the_same_message_at_once_store_one_turn(
        engine: str, make_settings: Callable[..., Settings], make_worker: Callable[[Settings], TurnWorker]) -> None:
    # GIVEN two execution environments (own worker, processor and store client) on the same stores
    settings = make_settings(engine)
    workers = [make_worker(settings), make_worker(settings)]
    start = threading.Barrier(2)
    responses: list[dict[str, Any]] = []

    def invoke(worker: TurnWorker) -> None:
        start.wait()
        responses.append(handle(worker, load_event("sqs-chat-turn")))

    threads = [threading.Thread(target=invoke, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # THEN one turn is stored; a worker that lost the race failed its record (SQS retries it later)
    assert len(transcript(workers[0], ONE_MESSAGE.session_id)) == 2
    assert {"batchItemFailures": []} in responses
    message_id = ONE_TURN["Records"][0]["messageId"]
    assert all(failures(r) in ([], [message_id]) for r in responses)
    # ... and that retry answers from the stored outcome
    assert handle(workers[1], load_event("sqs-chat-turn-redelivered")) == {"batchItemFailures": []}
    assert len(transcript(workers[0], ONE_MESSAGE.session_id)) == 2


def test_the_stored_outcome_carries_the_reply_and_usage(worker: TurnWorker) -> None:
    handle(worker, ONE_TURN)
    record = worker.persistence.get_record(key_data(None, ONE_MESSAGE.session_id, ONE_MESSAGE.turn_id))
    outcome = json.loads(record.response_data)
    assert set(outcome) == {"status", "model", "completed_at", "reply", "finish_reason", "usage"}
    assert outcome["model"] == worker.chat.backend.model_id
    assert outcome["finish_reason"] in ("stop", "length")


def test_a_queued_turn_keeps_its_sessions_ab_variant(make_settings: Callable[..., Settings],
                                                     make_worker: Callable[[Settings], TurnWorker]) -> None:
    # GIVEN an A/B experiment, and a session the API already assigned to arm "b"
    worker = make_worker(make_settings(ab_variants=[{"name": "a", "weight": 1}, {"name": "b", "weight": 1}]))
    worker.chat.store.update_attributes(ONE_MESSAGE.session_id, {"variant": "b"})

    handle(worker, ONE_TURN)

    assert transcript(worker, ONE_MESSAGE.session_id)[-1].attributes["variant"] == "b"


def test_clawdbot_invoke_runs_the_worker_through_the_runtime_client(tmp_path: Path) -> None:
    """Out of process, as on Lambda: AWS's runtime interface client imports the function folder's handler and
    passes its real context (the in-progress lock is bounded by that context's remaining time)."""
    import subprocess
    import sys

    from clawdbot.sessions.sqlite import SQLiteSessionStore

    store = SQLiteSessionStore(tmp_path)
    store.create(ONE_MESSAGE.session_id)
    done = subprocess.run(
        [sys.executable, "-m", "clawdbot.cli.main", "invoke", "functions/chat_worker", "events/sqs-chat-turn.json",
         "--env", f"CLAWDBOT_DATA_DIR={tmp_path}", "--env", "CLAWDBOT_SESSION_STORE=sqlite",
         "--env", f"CLAWDBOT_DEFAULT_MAX_TOKENS={MAX_TOKENS}", "--timeout", "60"],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=240, check=False)

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"batchItemFailures": []}
    assert [e.turn_id for e in store.read(ONE_MESSAGE.session_id).entries] == [ONE_MESSAGE.turn_id] * 2
    store.close()


def _record(session_id: str, number: int, receive_count: int = 1) -> dict[str, Any]:
    """A copy of the sample record for another session and turn (its own message and group ids)."""
    record = json.loads(json.dumps(ONE_TURN["Records"][0]))
    body = json.loads(record["body"])
    body.update(session_id=session_id, turn_id=f"chatcmpl-5a1e00000000000000{number:06d}")
    record["body"] = json.dumps(body)
    record["messageId"] = f"0e3f7a52-6c1d-4b8e-9f2a-{number:012d}"
    record["attributes"] |= {"MessageGroupId": session_id, "ApproximateReceiveCount": str(receive_count)}
    return record


def test_a_batch_hands_back_the_turns_it_has_no_time_left_for(
        make_settings: Callable[..., Settings], make_worker: Callable[[Settings], TurnWorker],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from clawdbot.testing import LambdaContext

    # GIVEN a worker whose turns may take up to 60 s, and an invocation with 30 s left
    monkeypatch.setenv("CLAWDBOT_QUEUE_TURN_BUDGET_SECONDS", "60")
    monkeypatch.setenv("CLAWDBOT_QUEUE_MAX_RECEIVE_COUNT", "3")
    worker = make_worker(make_settings())
    first, second, third = _record("sess_sample_a", 1), _record("sess_sample_b", 2), _record("sess_sample_c", 3, 3)

    response = handle(worker, {"Records": [first, second, third]}, LambdaContext(timeout_s=30))

    # THEN the invocation's first record runs, the next is handed back unstarted, and the one on its last
    # delivery runs all the same (deferring it would dead-letter a turn never tried)
    assert failures(response) == [second["messageId"]]
    assert [e.role for e in transcript(worker, "sess_sample_a")] == ["user", "assistant"]
    assert transcript(worker, "sess_sample_b") == []
    assert [e.role for e in transcript(worker, "sess_sample_c")] == ["user", "assistant"]
    # AND its next delivery, in an invocation with time to spare, runs it
    again = handle(worker, {"Records": [_record("sess_sample_b", 2, 2)]}, LambdaContext(timeout_s=120))
    assert failures(again) == []
    assert [e.role for e in transcript(worker, "sess_sample_b")] == ["user", "assistant"]
