"""A turn that keeps failing for a passing reason is given up on the queue's last delivery: stored ``failed`` so the
client stops polling ``pending``, and still parked in the DLQ so the alarm tells the operators."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import pytest

from clawdbot.queue.messages import TurnMessage
from clawdbot.queue.status import TurnStatusReader
from clawdbot.testing import load_event
from tests.fixtures.servers import free_port
from tests.queue.conftest import failures, handle

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from clawdbot.config.settings import Settings
    from clawdbot.inference.sagemaker import SageMakerBackend
    from clawdbot.queue.worker import TurnWorker

ONE_TURN = load_event("sqs-chat-turn")
ONE_MESSAGE = TurnMessage.model_validate_json(ONE_TURN["Records"][0]["body"])
MAX_RECEIVE_COUNT = 3


def delivery(receive_count: int) -> dict[str, Any]:
    """The sample turn as SQS hands it over for the ``receive_count``-th time."""
    event = copy.deepcopy(ONE_TURN)
    event["Records"][0]["attributes"]["ApproximateReceiveCount"] = str(receive_count)
    return event


@pytest.fixture
def unreachable_model(model_dir: Path) -> Iterator[SageMakerBackend]:
    """A SageMaker backend whose endpoint refuses connections: every turn fails with a retryable 502."""
    import boto3

    from clawdbot.inference.sagemaker import SageMakerBackend, SageMakerConfig

    config = SageMakerConfig(max_attempts=1, connect_timeout=2, region_name="us-east-1")
    client = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing").client(
        "sagemaker-runtime", region_name="us-east-1", endpoint_url=f"http://127.0.0.1:{free_port()}",
        config=config.botocore_config())
    backend = SageMakerBackend("clawdbot-chat", model_dir, config=config, client=client)
    yield backend
    backend.close()


@pytest.fixture
def failing_worker(make_settings: Callable[..., Settings], unreachable_model: SageMakerBackend,
                   monkeypatch: pytest.MonkeyPatch) -> Iterator[TurnWorker]:
    from clawdbot.queue.worker import TurnWorker
    from clawdbot.sessions.factory import build_store

    # GIVEN the variable the stack sets from the queue's redrive policy, and the sample's session
    monkeypatch.setenv("CLAWDBOT_QUEUE_MAX_RECEIVE_COUNT", str(MAX_RECEIVE_COUNT))
    settings = make_settings()
    store = build_store(settings)
    store.create(ONE_MESSAGE.session_id)
    yield TurnWorker.from_settings(settings, store=store, backend=unreachable_model)
    store.close()


def outcome(worker: TurnWorker) -> dict[str, Any]:
    reader = TurnStatusReader(worker.chat.store, worker.persistence, worker.window)
    return reader.outcome(ONE_MESSAGE.session_id, ONE_MESSAGE.turn_id, ONE_MESSAGE.owner)


def test_a_turn_failing_on_its_last_delivery_is_stored_failed_and_dead_lettered(failing_worker: TurnWorker) -> None:
    message_id = ONE_TURN["Records"][0]["messageId"]
    # WHEN the model cannot be reached on the deliveries before the last: retried, and the client keeps waiting
    for receive_count in range(1, MAX_RECEIVE_COUNT):
        assert failures(handle(failing_worker, delivery(receive_count))) == [message_id]
        assert outcome(failing_worker) == {"status": "pending"}

    # WHEN it fails on the last delivery too
    # THEN the record still fails (SQS moves it to the DLQ, whose alarm fires) ...
    assert failures(handle(failing_worker, delivery(MAX_RECEIVE_COUNT))) == [message_id]
    # ... but the client now reads a final answer, and nothing was added to the session
    final = outcome(failing_worker)
    assert final["status"] == "failed"
    assert final["error"]["code"] == "turn_retries_exhausted"
    assert final["error"]["type"] == "server_error"
    assert f"{MAX_RECEIVE_COUNT} attempts" in final["error"]["message"]
    assert "upstream_error" in final["error"]["message"]  # the last reason, for whoever reads it
    assert failing_worker.chat.store.read(ONE_MESSAGE.session_id).entries == []

    # AND a redrive from the DLQ (its receive count starts over) answers from the stored outcome: consumed, not rerun
    assert failures(handle(failing_worker, delivery(1))) == []
    assert outcome(failing_worker) == final
