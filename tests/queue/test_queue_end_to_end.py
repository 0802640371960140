"""End to end: a turn POSTed to the API travels through a real SQS endpoint (moto's server, with boto3) into the
worker handler, and GET shows the reply; the reply also reaches the allowed SNS topic.

The queue is drained by ``clawdbot.queue.poller``, which does what Lambda's event source mapping does: receive,
build the SQS event, invoke the handler, delete all but the ``batchItemFailures``.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest
from fastapi.testclient import TestClient

from clawdbot.api.app import create_app
from clawdbot.queue.poller import DrainStats, drain
from tests.queue.conftest import handle, lambda_context

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from clawdbot.config.settings import Settings
    from clawdbot.inference.base import InferenceBackend
    from clawdbot.queue.worker import TurnWorker


@dataclass
class Deployment:
    """The API and the worker of one deployment, sharing its stores, its queue and its reply topic."""

    api: TestClient
    worker: TurnWorker
    sqs: Any
    queue_url: str
    topic_arn: str
    subscriber_url: str
    events: list[dict[str, Any]]
    settings: Settings | None = None

    def drain(self) -> DrainStats:
        def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
            self.events.append(event)
            return handle(self.worker, event, context)

        return drain(self.sqs, self.queue_url, handler, lambda_context)

    def new_session(self) -> str:
        response = self.api.post("/v1/sessions", json={})
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def post_turn(self, session_id: str, **body: Any) -> dict[str, Any]:
        response = self.api.post(f"/v1/sessions/{session_id}/turns", json=body)
        assert response.status_code == 202, response.text
        assert response.headers["location"] == f"/v1/sessions/{session_id}/turns/{response.json()['id']}"
        return dict(response.json())

    def get_turn(self, session_id: str, turn_id: str) -> dict[str, Any]:
        response = self.api.get(f"/v1/sessions/{session_id}/turns/{turn_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def transcript(self, session_id: str) -> list[dict[str, Any]]:
        return list(self.api.get(f"/v1/sessions/{session_id}").json()["messages"]["data"])


@pytest.fixture
def deployment(sqs_endpoint_env: str, monkeypatch: pytest.MonkeyPatch, backend: InferenceBackend,
               make_settings: Callable[..., Settings], make_worker: Callable[[Settings], TurnWorker]
               ) -> Iterator[Deployment]:
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL_SNS", sqs_endpoint_env)  # the same moto server answers SNS
    sqs, sns = boto3.client("sqs"), boto3.client("sns")
    name = f"clawdbot-turns-{uuid.uuid4().hex[:12]}"
    queue_url = sqs.create_queue(QueueName=f"{name}.fifo", Attributes={
        "FifoQueue": "true", "VisibilityTimeout": "60"})["QueueUrl"]
    topic_arn = sns.create_topic(Name=f"{name}-replies")["TopicArn"]
    subscriber_url = sqs.create_queue(QueueName=f"{name}-subscriber")["QueueUrl"]
    subscriber_arn = sqs.get_queue_attributes(QueueUrl=subscriber_url,
                                              AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=subscriber_arn,
                  Attributes={"RawMessageDelivery": "true"})

    settings = make_settings(queue_url=queue_url, reply_topic_arns=topic_arn)
    worker = make_worker(settings)
    with TestClient(create_app(settings, store=worker.chat.store, backend=backend)) as api:
        yield Deployment(api, worker, sqs, queue_url, topic_arn, subscriber_url, [], settings)


def test_a_posted_turn_is_queued_run_by_the_worker_and_read_back(deployment: Deployment) -> None:
    session_id = deployment.new_session()

    accepted = deployment.post_turn(session_id, content="Hello there!")

    turn_id = accepted["id"]
    assert accepted["object"] == "session.turn"
    assert (accepted["session_id"], accepted["status"]) == (session_id, "pending")
    pending = deployment.api.get(f"/v1/sessions/{session_id}/turns/{turn_id}")
    assert pending.json()["status"] == "pending"
    assert pending.headers["retry-after"] == "1"

    stats = deployment.drain()

    assert (stats.received, stats.deleted, stats.failed) == (1, 1, 0)
    (record,) = deployment.events[0]["Records"]
    assert record["attributes"]["MessageGroupId"] == session_id  # one active turn per session
    assert record["eventSourceARN"].endswith(".fifo")
    done = deployment.get_turn(session_id, turn_id)
    entries = deployment.transcript(session_id)
    assert [(e["role"], e["turn_id"]) for e in entries] == [("user", turn_id), ("assistant", turn_id)]
    assert entries[0]["content"] == "Hello there!"
    assert done["status"] == "done"
    assert done["reply"] == {"role": "assistant", "content": entries[1]["content"]}
    assert done["usage"]["total_tokens"] == done["usage"]["prompt_tokens"] + done["usage"]["completion_tokens"]
    assert done["model"] == deployment.worker.chat.backend.model_id
    assert "retry-after" not in deployment.api.get(f"/v1/sessions/{session_id}/turns/{turn_id}").headers


def test_a_queued_turn_is_generated_as_its_request_asks(deployment: Deployment) -> None:
    # GIVEN the same message queued in two sessions, sampled at temperature 1 with one seed and at most 3 tokens
    sampling = {"max_tokens": 3, "temperature": 1.0, "seed": 5, "top_p": 0.9, "stop": ["\n\n"]}
    sessions = [deployment.new_session(), deployment.new_session()]
    turns = [deployment.post_turn(session_id, content="Tell me a story.", **sampling)["id"]
             for session_id in sessions]
    deployment.drain()
    # THEN each message carried the sampling, and the worker honoured it: the same reply, within 3 tokens
    bodies = [json.loads(r["body"]) for e in deployment.events for r in e["Records"]]
    assert [{k: body[k] for k in sampling} for body in bodies] == [{**sampling, "stop": ["\n\n"]}] * 2
    done = [deployment.get_turn(session_id, turn_id) for session_id, turn_id in zip(sessions, turns, strict=True)]
    assert [d["status"] for d in done] == ["done", "done"]
    assert done[0]["reply"] == done[1]["reply"] and done[0]["usage"]["completion_tokens"] <= 3
    # and a turn that sets none of them sends none
    plain = deployment.post_turn(sessions[0], content="And then?")["id"]
    deployment.drain()
    last = json.loads(deployment.events[-1]["Records"][0]["body"])
    assert last["turn_id"] == plain and not set(sampling) & set(last)


def test_a_sessions_turns_run_one_at_a_time_in_order(deployment: Deployment) -> None:
    first, second = deployment.new_session(), deployment.new_session()
    questions = ["One?", "Two?", "Three?"]
    ids = [deployment.post_turn(first, content=q)["id"] for q in questions]
    other = deployment.post_turn(second, content="Meanwhile?")["id"]

    assert deployment.drain().deleted == 4

    entries = deployment.transcript(first)
    assert [e["content"] for e in entries if e["role"] == "user"] == questions
    assert [e["turn_id"] for e in entries] == [i for i in ids for _ in range(2)]
    assert [e["role"] for e in entries] == ["user", "assistant"] * 3
    assert all(deployment.get_turn(first, i)["status"] == "done" for i in ids)
    assert deployment.get_turn(second, other)["status"] == "done"


def test_retrying_a_post_with_the_same_turn_id_makes_one_turn(deployment: Deployment) -> None:
    session_id = deployment.new_session()

    ids = {deployment.post_turn(session_id, content="Hi!", turn_id="client-turn-1")["id"] for _ in range(2)}

    assert ids == {"client-turn-1"}
    assert deployment.drain().received == 1  # SQS dropped the second send as a duplicate
    deployment.post_turn(session_id, content="Hi!", turn_id="client-turn-1")
    deployment.drain()
    assert len(deployment.transcript(session_id)) == 2
    assert deployment.get_turn(session_id, "client-turn-1")["status"] == "done"


def test_the_outcome_is_published_to_the_reply_topic(deployment: Deployment) -> None:
    session_id = deployment.new_session()
    turn_id = deployment.post_turn(session_id, content="Ping?", reply_topic_arn=deployment.topic_arn)["id"]

    deployment.drain()

    received = deployment.sqs.receive_message(QueueUrl=deployment.subscriber_url, MaxNumberOfMessages=10,
                                              MessageAttributeNames=["All"])["Messages"]
    assert len(received) == 1
    assert json.loads(received[0]["Body"]) == deployment.get_turn(session_id, turn_id)
    assert received[0]["MessageAttributes"]["turn_id"]["StringValue"] == turn_id


def test_a_turn_without_a_reply_target_publishes_nothing(deployment: Deployment) -> None:
    session_id = deployment.new_session()
    deployment.post_turn(session_id, content="Quiet, please.")
    deployment.drain()
    assert deployment.sqs.receive_message(QueueUrl=deployment.subscriber_url).get("Messages", []) == []


@pytest.mark.parametrize(("path", "body", "status", "code"), [
    ("/v1/sessions/sess_missing/turns", {"content": "hi"}, 404, "session_not_found"),
    ("{session}/turns", {"content": "hi", "reply_topic_arn": "arn:aws:sns:us-east-1:123456789012:other"}, 400,
     "reply_target_not_allowed"),
    ("{session}/turns", {"content": ""}, 400, "empty_content"),
    ("{session}/turns", {"content": [{"type": "text", "text": ""}]}, 400, "empty_content"),
    ("{session}/turns", {"content": "hi", "turn_id": "no spaces allowed"}, 400, None),
    ("{session}/turns", {"content": "hi", "top_k": 2}, 400, None),  # not a field of a queued turn
    ("{session}/turns", {"content": "hi", "temperature": 2.5}, 400, "invalid_value"),
    ("{session}/turns", {"content": "hi", "stop": ["a", "b", "c", "d", "e"]}, 400, "invalid_value"),
    ("{session}/turns", {}, 400, "missing_required_parameter"),
])
def test_a_turn_that_cannot_be_queued_is_refused_and_nothing_is_sent(
        deployment: Deployment, path: str, body: dict[str, Any], status: int, code: str | None) -> None:
    url = path.replace("{session}", f"/v1/sessions/{deployment.new_session()}")
    response = deployment.api.post(url, json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    if code is not None:
        assert error["code"] == code
    assert deployment.drain().received == 0


def test_reading_turns_checks_the_session_and_the_turn_id(deployment: Deployment) -> None:
    session_id = deployment.new_session()
    assert deployment.api.get("/v1/sessions/sess_missing/turns/t-1").status_code == 404
    assert deployment.api.get(f"/v1/sessions/{session_id}/turns/bad%20id").status_code == 400
    # An id nobody queued reads as pending: ids are unguessable, and telling them apart would cost a write a turn.
    assert deployment.get_turn(session_id, "never-queued")["status"] == "pending"


def test_without_a_queue_turns_are_refused_with_503(make_settings: Callable[..., Settings],
                                                   backend: InferenceBackend) -> None:
    settings = make_settings()
    with TestClient(create_app(settings, backend=backend)) as api:
        session_id = api.post("/v1/sessions", json={}).json()["id"]
        response = api.post(f"/v1/sessions/{session_id}/turns", json={"content": "hi"})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "queue_not_configured"


def test_turns_belong_to_the_key_that_owns_the_session(deployment: Deployment) -> None:
    # GIVEN two API keys (with keys in the store, every request needs one)
    keys = deployment.api.app.state.traffic.keys
    alice_key, alice = keys.create("alice")
    _, bob = keys.create("bob")
    as_alice, as_bob = {"authorization": f"Bearer {alice}"}, {"authorization": f"Bearer {bob}"}
    session_id = deployment.api.post("/v1/sessions", json={}, headers=as_alice).json()["id"]
    turns = f"/v1/sessions/{session_id}/turns"

    turn_id = deployment.api.post(turns, json={"content": "Just for me?"}, headers=as_alice).json()["id"]

    # THEN nobody else can queue into, or read from, alice's session
    assert deployment.api.post(turns, json={"content": "Let me in"}).status_code == 401
    assert deployment.api.post(turns, json={"content": "Let me in"}, headers=as_bob).status_code == 404
    assert deployment.api.get(f"{turns}/{turn_id}", headers=as_bob).status_code == 404
    # ... and the worker runs the turn as alice
    assert deployment.drain().deleted == 1
    assert json.loads(deployment.events[0]["Records"][0]["body"])["owner"] == alice_key.key_id
    done = deployment.api.get(f"{turns}/{turn_id}", headers=as_alice).json()
    assert done["status"] == "done"
    assert deployment.api.get(f"{turns}/{turn_id}", headers=as_bob).status_code == 404


def test_turns_a_batch_has_no_time_left_for_are_handed_back_at_once(deployment: Deployment,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from clawdbot.queue.worker import TurnWorker
    from clawdbot.testing import LambdaContext

    # GIVEN a worker whose turns may take 60 s, invoked with 30 s left each time (the queue's visibility: 60 s)
    monkeypatch.setenv("CLAWDBOT_QUEUE_TURN_BUDGET_SECONDS", "60")
    assert deployment.settings is not None
    worker = TurnWorker.from_settings(deployment.settings, store=deployment.worker.chat.store,
                                      backend=deployment.worker.chat.backend)
    sessions = [deployment.new_session() for _ in range(3)]
    turns = [deployment.post_turn(session_id, content=f"Turn {i}")["id"] for i, session_id in enumerate(sessions)]

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        deployment.events.append(event)
        return handle(worker, event, context)

    stats = drain(deployment.sqs, deployment.queue_url, handler, lambda: LambdaContext(timeout_s=30))

    # THEN each invocation ran one turn and handed the others back visible at once, so one drain ran them all
    # (left for the visibility timeout, they would have waited a minute: the drain would have stopped at one)
    assert [len(event["Records"]) for event in deployment.events] == [3, 2, 1]
    assert (stats.deleted, stats.failed) == (3, 3)
    assert [deployment.get_turn(s, t)["status"] for s, t in zip(sessions, turns, strict=True)] == ["done"] * 3

