"""SnapStart: the chat_api handler initialized once, snapshotted, and restored (``clawdbot.snapstart``).

The handler runs under AWS's runtime interface client with ``AWS_LAMBDA_INITIALIZATION_TYPE=snap-start``, which
runs the before-snapshot hooks after init, asks the Runtime API to be restored, then runs the after-restore hooks
before the first event: Lambda's own sequence. The microVM snapshot itself is AWS's; what a restored environment
shares with its siblings (the pseudo-random state) is reproduced with ``fork``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
import redis

from clawdbot import snapstart
from clawdbot.local import invoke_function
from clawdbot.testing import load_event
from tests.fixtures.servers import FAKE_AWS_ENV

if TYPE_CHECKING:
    import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
CHAT_API = REPO_ROOT / "functions" / "chat_api"
CHAT_WORKER = REPO_ROOT / "functions" / "chat_worker"


def chat_event(key: str | None = None) -> dict[str, object]:
    event = load_event("chat-completion")
    if key is not None:
        event["headers"] = {**event["headers"], "authorization": f"Bearer {key}"}  # type: ignore[dict-item]
    return event


def lines_with(logs: str, *needles: str) -> list[int]:
    """The index of the first log line containing each needle (``-1`` if none does)."""
    lines = logs.splitlines()
    return [next((i for i, line in enumerate(lines) if needle in line), -1) for needle in needles]


def test_a_snapstart_version_closes_its_connections_restores_then_answers(
        dynamodb_local: str, tmp_path: Path) -> None:
    # GIVEN chat_api on DynamoDB Local: its init calls DynamoDB (the sessions table is checked), leaving a pooled
    # connection in the client that the snapshot would carry
    env = {**FAKE_AWS_ENV, "AWS_ENDPOINT_URL_DYNAMODB": dynamodb_local, "CLAWDBOT_SESSION_STORE": "dynamodb",
           "CLAWDBOT_DYNAMODB_TABLE": "snapstart-sessions", "CLAWDBOT_INFERENCE": "local",
           "CLAWDBOT_DATA_DIR": str(tmp_path)}

    result = invoke_function(CHAT_API, chat_event(), env=env, timeout_s=60, snapstart=True)

    # THEN Lambda's phases come in order: init, before-snapshot (connections closed), restore, after-restore, event
    assert result.ok, result.logs
    response = result.json()
    assert response["statusCode"] == 200, response
    assert json.loads(response["body"])["object"] == "chat.completion"
    snapshot, restore_start, restored, restore_report, start = lines_with(
        result.logs, "pooled connection(s) closed", "RESTORE_START", "restored from a snapshot", "RESTORE_REPORT",
        "START RequestId")
    assert -1 < snapshot < restore_start < restored < restore_report < start, result.logs
    closed = json.loads(result.logs.splitlines()[snapshot])["message"]
    assert int(closed.split()[1]) >= 1, closed  # "snapshot: N pooled connection(s) closed"
    # AND the report bills the restore, not the init a published version has already run
    assert "Restore Duration:" in result.logs and "Init Duration:" not in result.logs
    assert result.restore_duration_ms is not None and result.restore_duration_ms >= 0


def test_a_snapstart_worker_restores_then_runs_its_batch(tmp_path: Path) -> None:
    # GIVEN the queue worker (SnapStart in every preset) and the sample turn's session
    from clawdbot.queue.messages import TurnMessage
    from clawdbot.sessions.sqlite import SQLiteSessionStore

    event = load_event("sqs-chat-turn")
    message = TurnMessage.model_validate_json(event["Records"][0]["body"])  # type: ignore[index]
    store = SQLiteSessionStore(tmp_path)
    store.create(message.session_id)
    env = {**FAKE_AWS_ENV, "CLAWDBOT_SESSION_STORE": "sqlite", "CLAWDBOT_INFERENCE": "local",
           "CLAWDBOT_DATA_DIR": str(tmp_path), "CLAWDBOT_DEFAULT_MAX_TOKENS": "8"}

    result = invoke_function(CHAT_WORKER, event, env=env, timeout_s=60, snapstart=True)

    # THEN init, the snapshot's hooks, the restore and then the batch, whose turn is stored
    assert result.ok, result.logs
    assert result.json() == {"batchItemFailures": []}
    restore_start, restored, start = lines_with(result.logs, "RESTORE_START", "restored from a snapshot",
                                                "START RequestId")
    assert -1 < restore_start < restored < start, result.logs
    assert "Restore Duration:" in result.logs and "Init Duration:" not in result.logs
    assert [(e.role, e.turn_id) for e in store.read(message.session_id).entries] == [
        ("user", message.turn_id), ("assistant", message.turn_id)]
    store.close()


def test_a_snapstart_init_primes_the_app_into_the_snapshot_and_an_on_demand_init_does_not(
        dynamodb_local: str, tmp_path: Path) -> None:
    # GIVEN chat_api with its sessions, keys and rate limits on DynamoDB Local and a deploy key
    from clawdbot.traffic.keys import hash_key

    key = "cb-priming-deploy-key-0123456789"
    env = {**FAKE_AWS_ENV, "AWS_ENDPOINT_URL_DYNAMODB": dynamodb_local, "CLAWDBOT_SESSION_STORE": "dynamodb",
           "CLAWDBOT_DYNAMODB_TABLE": "snapstart-priming", "CLAWDBOT_INFERENCE": "local",
           "CLAWDBOT_DATA_DIR": str(tmp_path), "CLAWDBOT_AUTH": "required",
           "CLAWDBOT_BOOTSTRAP_KEY_SHA256": hash_key(key)}
    event = load_event("session-read")
    event["headers"] = {**event["headers"], "authorization": f"Bearer {key}"}  # type: ignore[dict-item]

    # WHEN it is published as a SnapStart version and restored, and when it starts on demand
    restored = invoke_function(CHAT_API, event, env=env, timeout_s=60, snapstart=True)
    on_demand = invoke_function(CHAT_API, event, env=env, timeout_s=60)

    # THEN the SnapStart init primed the app before the snapshot (its warm-up request answered by /healthz), and
    # the restored environment answers the key's request: the session
    # does not exist (priming created none, and accepted the key without charging it)
    for result in (restored, on_demand):
        assert result.ok, result.logs
        assert result.json()["statusCode"] == 404, result.json()
    primed, snapshot, start = lines_with(restored.logs, "primed for the snapshot", "pooled connection(s) closed",
                                         "START RequestId")
    assert -1 < primed < snapshot < start, restored.logs
    assert "[200]" in restored.logs.splitlines()[primed]
    # AND an on-demand init leaves that work to the first request, which has no snapshot to save it into
    assert "primed for the snapshot" not in on_demand.logs


def test_a_key_rotated_after_the_publish_is_accepted_by_a_restored_environment(
        sqs_server: str, tmp_path: Path) -> None:
    # GIVEN the deploy key in Secrets Manager (moto) when the version is published
    secrets = boto3.client("secretsmanager", endpoint_url=sqs_server, region_name=FAKE_AWS_ENV["AWS_REGION"])
    arn = secrets.create_secret(Name=f"clawdbot-key-{tmp_path.name}",
                                SecretString="cb-old-deploy-key-0123456789")["ARN"]
    env = {**FAKE_AWS_ENV, "AWS_ENDPOINT_URL_SECRETS_MANAGER": sqs_server, "CLAWDBOT_API_KEY_SECRET_ARN": arn,
           "CLAWDBOT_AUTH": "required", "CLAWDBOT_SESSION_STORE": "sqlite", "CLAWDBOT_INFERENCE": "local",
           "CLAWDBOT_DATA_DIR": str(tmp_path)}

    # WHEN the operator redeploys with a new key (only the secret changes: no new version, no new init) before
    # the snapshot is restored
    def rotate() -> None:
        secrets.put_secret_value(SecretId=arn, SecretString="cb-new-deploy-key-9876543210")

    result = invoke_function(CHAT_API, chat_event("cb-new-deploy-key-9876543210"), env=env, timeout_s=60,
                             snapstart=True, on_snapshot=rotate)

    # THEN the restored environment read the secret again: the new key is accepted
    assert result.ok, result.logs
    assert result.json()["statusCode"] == 200, result.json()


def test_restored_environments_do_not_share_their_random_state() -> None:
    # Environments restored from one snapshot start from the same memory, the random module's state included
    # (a fork would not do: the random module reseeds a forked child by itself).
    assert draws_after_restores(restore_hook=False)[0] == draws_after_restores(restore_hook=False)[1]
    first, second = draws_after_restores(restore_hook=True)
    assert first != second


def draws_after_restores(*, restore_hook: bool) -> tuple[list[float], list[float]]:
    """What two environments restored from one snapshot draw for their first back-offs."""
    random.seed(1234)
    snapshot = random.getstate()
    draws = []
    for _ in range(2):
        random.setstate(snapshot)  # the restore
        if restore_hook:
            snapstart.after_restore()
        draws.append([random.random() for _ in range(4)])
    return draws[0], draws[1]


def test_dropping_connections_closes_pooled_sockets_and_the_clients_still_work(
        dynamodb_local: str, redis_server: str) -> None:
    # GIVEN a DynamoDB client and a Redis client, each with a connection open from an earlier call
    dynamodb = boto3.client("dynamodb", endpoint_url=dynamodb_local, region_name=FAKE_AWS_ENV["AWS_REGION"])
    dynamodb.list_tables()
    cache = redis.Redis.from_url(redis_server)
    cache.ping()
    pool = cache.connection_pool
    assert len(pool._available_connections) == 1

    closed = snapstart.drop_connections()

    # THEN both pools are empty (at least these two connections were closed), and both clients reconnect on use
    assert closed >= 2
    assert all(connection._sock is None for connection in pool._available_connections)
    assert len(dynamodb._endpoint.http_session._manager.pools) == 0
    assert "TableNames" in dynamodb.list_tables()
    assert cache.ping() is True


def test_restore_steps_are_kept_only_while_initializing_for_a_snapshot(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[str] = []
    monkeypatch.setattr(snapstart, "_restore_callbacks", [])
    monkeypatch.setenv("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand")
    assert snapstart.on_restore(lambda: ran.append("on-demand")) is False

    monkeypatch.setenv("AWS_LAMBDA_INITIALIZATION_TYPE", "snap-start")
    assert snapstart.on_restore(lambda: ran.append("snap-start")) is True
    snapstart.after_restore()

    assert ran == ["snap-start"]


def test_hooks_are_registered_only_for_a_snapstart_init(monkeypatch: pytest.MonkeyPatch) -> None:
    import snapshot_restore_py

    monkeypatch.setattr(snapshot_restore_py, "_before_snapshot_registry", [])
    monkeypatch.setattr(snapshot_restore_py, "_after_restore_registry", [])
    monkeypatch.setenv("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand")
    assert snapstart.register_hooks() is False
    assert snapshot_restore_py.get_before_snapshot() == [] and snapshot_restore_py.get_after_restore() == []

    monkeypatch.setenv("AWS_LAMBDA_INITIALIZATION_TYPE", "snap-start")
    assert snapstart.register_hooks() is True
    assert [hook for hook, _, _ in snapshot_restore_py.get_before_snapshot()] == [snapstart.before_snapshot]
    assert [hook for hook, _, _ in snapshot_restore_py.get_after_restore()] == [snapstart.after_restore]
