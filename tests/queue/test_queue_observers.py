"""A queued turn is counted like a synchronous one: its metrics reach CloudWatch (EMF on stdout, with Powertools
Logger lines around them) and its tokens come out of the caller's rate-limit buckets, shared with the API."""

from __future__ import annotations

import json
import uuid
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

import pytest

from clawdbot.queue.messages import TurnMessage
from clawdbot.queue.status import TurnStatusReader
from clawdbot.testing import load_event
from clawdbot.traffic.keys import Limits
from tests.queue.conftest import handle, lambda_context, worker_handler_module

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path
    from types import ModuleType

    from clawdbot.config.settings import Settings
    from clawdbot.queue.worker import TurnWorker
    from clawdbot.traffic.keystore.base import KeyStore

ONE_TURN = load_event("sqs-chat-turn")
ONE_MESSAGE = TurnMessage.model_validate_json(ONE_TURN["Records"][0]["body"])


def usage_of(worker: TurnWorker, message: TurnMessage) -> dict[str, int]:
    reader = TurnStatusReader(worker.chat.store, worker.persistence, worker.window)
    outcome = reader.outcome(message.session_id, message.turn_id, message.owner)
    assert outcome["status"] == "done", outcome
    return dict(outcome["usage"])


@pytest.fixture
def cold_start(tmp_path: Path, model_dir: Path) -> Iterator[Callable[[], ModuleType]]:
    """Imports the handler module with EMF metrics and debug logging, as configured on Lambda. Called from the
    test body: Powertools Logger keeps the stream it starts with, and pytest gives each phase a new one."""
    with ExitStack() as stack:
        yield lambda: stack.enter_context(worker_handler_module(
            tmp_path, CLAWDBOT_METRICS="emf", POWERTOOLS_LOG_LEVEL="DEBUG", POWERTOOLS_SERVICE_NAME="clawdbot"))


def test_a_queued_turn_emits_the_turn_metrics_and_instrumented_log_lines(
        cold_start: Callable[[], ModuleType], capsys: pytest.CaptureFixture[str]) -> None:
    emf_worker = cold_start()
    # GIVEN the deployed handler module and the sample's session
    emf_worker.worker.chat.store.create(ONE_MESSAGE.session_id)
    capsys.readouterr()
    context = lambda_context()

    # WHEN Lambda hands it the sample batch
    assert emf_worker.handler(ONE_TURN, context) == {"batchItemFailures": []}

    # THEN stdout carries one EMF document for the turn, with the turn's own token count
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    turns = [d for d in lines if "_aws" in d and "Turns" in d]
    assert len(turns) == 1, lines
    (document,) = turns
    assert document["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "Clawdbot"
    assert document["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["variant"]]
    assert document["variant"] == "default"
    assert document["Turns"] == [1.0]
    assert document["Tokens"] == [float(usage_of(emf_worker.worker, ONE_MESSAGE)["total_tokens"])]
    assert document["TurnLatency"][0] > 0
    # AND the library's log lines went through Powertools Logger with the Lambda context and the session id
    logs = [d for d in lines if "_aws" not in d]
    done = [d for d in logs if d.get("message", "").startswith(f"turn {ONE_MESSAGE.turn_id} done")]
    assert len(done) == 1, logs
    assert done[0]["function_request_id"] == context.aws_request_id
    assert done[0]["session_id"] == ONE_MESSAGE.session_id
    assert done[0]["service"] == "clawdbot"


# ------------------------------------------------------------------------------------------------ tokens
@pytest.fixture
def owned_turn(request: pytest.FixtureRequest, make_settings: Callable[..., Settings],
               make_worker: Callable[..., TurnWorker]) -> Iterator[tuple[Settings, TurnWorker, str, dict[str, Any]]]:
    """(settings, worker, key id, event): a key with a daily token quota that owns the sample session, and the
    sample turn as that key enqueued it. The key is removed from the shared server afterwards."""
    from clawdbot.traffic.factory import build_key_store

    settings = make_settings(request.param)
    worker = make_worker(settings, create_sessions=False)
    keys = build_key_store(settings)
    key, _ = keys.create(f"queue-test-{uuid.uuid4().hex[:8]}", limits=Limits(daily_tokens=1_000_000))
    worker.chat.store.create(ONE_MESSAGE.session_id, owner=key.key_id)
    message = ONE_MESSAGE.model_copy(update={"owner": key.key_id})
    record = {**ONE_TURN["Records"][0], "body": message.to_body()}
    yield settings, worker, key.key_id, {"Records": [record]}
    _forget_key(keys, key.key_hash)
    keys.close()


def _forget_key(keys: KeyStore, key_hash: str) -> None:
    """Keys are only ever revoked through the store's API; tests on shared servers delete theirs outright."""
    from clawdbot.traffic.keystore.dynamodb import DynamoDBKeyStore
    from clawdbot.traffic.keystore.redis import RedisKeyStore

    if isinstance(keys, RedisKeyStore):
        keys.client.hdel(keys.hash_name, key_hash)
    elif isinstance(keys, DynamoDBKeyStore):
        keys.client.delete_item(TableName=keys.table, Key={"pk": {"S": keys.partition}, "sk": {"S": key_hash}})


@pytest.mark.parametrize("owned_turn", ["dynamodb", "redis"], indirect=True)
def test_a_queued_turn_charges_its_tokens_to_the_callers_buckets(
        owned_turn: tuple[Settings, TurnWorker, str, dict[str, Any]]) -> None:
    from clawdbot.traffic.factory import build_rate_limiter

    settings, worker, key_id, event = owned_turn
    # WHEN the worker runs a turn that the key enqueued
    assert handle(worker, event) == {"batchItemFailures": []}

    # THEN the API's limiter (its own client on the same store) sees exactly the turn's tokens spent today:
    # a daily quota of that many is used up, one more token of quota is not
    used = usage_of(worker, TurnMessage.model_validate_json(event["Records"][0]["body"]))["total_tokens"]
    assert used > 0
    api_limiter = build_rate_limiter(settings)
    try:
        spent = api_limiter.admit(key_id, Limits(daily_tokens=used))
        assert (spent.allowed, spent.reason) == (False, "daily_tokens")
        assert api_limiter.admit(key_id, Limits(daily_tokens=used + 1)).allowed
    finally:
        api_limiter.close()

