"""Fixtures for queued turns: the shipped model, a worker on any session-store engine, and the Lambda handler.

Everything is real: the model runs through the ONNX engine, stores and idempotency layers talk to real servers
(SQLite files, redis-server, DynamoDB Local; moto's server stands in for SQS and SNS, which have no local engine).
"""

from __future__ import annotations

import copy
import importlib
import logging
import sys
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pytest
from aws_lambda_powertools.utilities.batch import process_partial_response

from clawdbot.config.settings import Settings, get_settings
from clawdbot.queue.worker import TurnWorker, new_processor
from clawdbot.testing import LambdaContext

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path
    from types import ModuleType

    from clawdbot.inference.base import InferenceBackend
    from clawdbot.sessions.base import SessionStore

#: The sessions the sample events (``events/sqs-chat-turn*.json``) address.
SAMPLE_SESSIONS = ("sess_sample_a", "sess_sample_b", "sess_sample_c")
#: Short replies keep every turn cheap; what a turn produces does not depend on its length.
MAX_TOKENS = 8
ENGINES = ("sqlite", "dynamodb", "redis")


def lambda_context() -> LambdaContext:
    return LambdaContext(function_name="clawdbot-chat-worker", timeout_s=120)


def handle(worker: TurnWorker, event: dict[str, Any], context: LambdaContext | None = None) -> dict[str, Any]:
    """One invocation as ``functions/chat_worker/handler.py`` runs it (a fresh processor: one per environment)."""
    return dict(process_partial_response(event=event, record_handler=worker.record_handler,
                                         processor=new_processor(), context=context or lambda_context()))


def failures(response: dict[str, Any]) -> list[str]:
    return [item["itemIdentifier"] for item in response["batchItemFailures"]]


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """The shipped model, unless ``CLAWDBOT_MODEL_DIR`` names another; missing, the tests fail (never skip)."""
    path = Settings().model_dir
    assert (path / "model.onnx").exists(), f"the model is missing at {path}"
    return path


@pytest.fixture(scope="session")
def backend(model_dir: Path) -> InferenceBackend:
    from clawdbot.inference.onnx import OnnxBackend

    return OnnxBackend(model_dir)


@pytest.fixture(scope="session")
def queue_dynamodb_table(dynamodb_local: str) -> str:
    """The sessions table (the stack's schema) in DynamoDB Local; turn records share it, as deployed."""
    import boto3

    from clawdbot.sessions.factory import ensure_dynamodb_table

    ensure_dynamodb_table(boto3.client("dynamodb", endpoint_url=dynamodb_local), "clawdbot-queue-test")
    return "clawdbot-queue-test"


@pytest.fixture
def make_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., Settings]:
    """Settings for one engine (``sqlite``/``dynamodb``/``redis``/``redis-cluster``), starting only the server it
    needs."""

    def make(engine: str = "sqlite", **overrides: Any) -> Settings:
        values: dict[str, Any] = {"data_dir": tmp_path / "data", "default_max_tokens": MAX_TOKENS,
                                  "session_store": engine}
        if engine == "dynamodb":
            request.getfixturevalue("dynamodb_endpoint_env")
            values["dynamodb_table"] = request.getfixturevalue("queue_dynamodb_table")
        elif engine == "redis":
            values["redis_url"] = request.getfixturevalue("redis_server")
        elif engine == "redis-cluster":
            values["session_store"] = "redis"
            values["redis_url"] = request.getfixturevalue("redis_cluster_server")
        return Settings(**{**values, **overrides})

    return make


@pytest.fixture
def make_worker(backend: InferenceBackend) -> Iterator[Callable[[Settings], TurnWorker]]:
    """Workers on a fresh store of the settings' engine, with the sample sessions created."""
    from clawdbot.sessions.factory import build_store

    stores: list[SessionStore] = []

    def make(settings: Settings, *, create_sessions: bool = True) -> TurnWorker:
        store = build_store(settings)
        stores.append(store)
        worker = TurnWorker.from_settings(settings, store=store, backend=backend)
        # Server-backed stores outlive a test: forget the sample sessions and every turn record first.
        _clear_turn_records(worker)
        for session_id in SAMPLE_SESSIONS:
            store.delete(session_id)
            if create_sessions:
                store.create(session_id)
        return worker

    yield make
    for store in stores:
        store.close()


def _clear_turn_records(worker: TurnWorker) -> None:
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

    from clawdbot.queue.idempotency import DYNAMODB_PARTITION, KEY_PREFIX
    from clawdbot.sessions.redis import RedisSessionStore

    layer = worker.persistence
    if isinstance(layer, DynamoDBPersistenceLayer):
        pages = layer.client.get_paginator("query").paginate(
            TableName=layer.table_name, KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": DYNAMODB_PARTITION}}, ProjectionExpression="pk, sk")
        for page in pages:
            for key in page["Items"]:
                layer.client.delete_item(TableName=layer.table_name, Key=key)
    elif isinstance(worker.chat.store, RedisSessionStore):
        for key in worker.chat.store.client.scan_iter(match=f"{KEY_PREFIX}#*"):
            worker.chat.store.client.delete(key)


@pytest.fixture
def worker(make_settings: Callable[..., Settings], make_worker: Callable[[Settings], TurnWorker]) -> TurnWorker:
    """A worker on the embedded engines (SQLite sessions and idempotency records)."""
    return make_worker(make_settings())


@contextmanager
def worker_handler_module(data_dir: Path, **env: str) -> Iterator[ModuleType]:
    """``functions/chat_worker/handler.py`` imported as Lambda would (cold start), from ``CLAWDBOT_*`` variables.

    The handler's Powertools Logger configures the ``clawdbot`` logger (and filters on the root's handlers) for
    the whole process: it starts from a fresh logger here, as in a new Lambda process, and all of that is put
    back afterwards, so later tests see plain library logging.
    """
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {"CLAWDBOT_DATA_DIR": str(data_dir), "CLAWDBOT_SESSION_STORE": "sqlite",
                            "CLAWDBOT_INFERENCE": "local", "CLAWDBOT_DEFAULT_MAX_TOKENS": str(MAX_TOKENS),
                            "POWERTOOLS_TRACE_DISABLED": "true", **env}.items():
            patch.setenv(name, value)
        _save_logging_state(patch)
        get_settings.cache_clear()
        sys.modules.pop("functions.chat_worker.handler", None)
        try:
            yield importlib.import_module("functions.chat_worker.handler")
        finally:
            sys.modules.pop("functions.chat_worker.handler", None)
            get_settings.cache_clear()


def _save_logging_state(patch: pytest.MonkeyPatch) -> None:
    log = logging.getLogger("clawdbot")
    for attr in ("handlers", "filters", "propagate", "level", "disabled"):
        patch.setattr(log, attr, copy.copy(getattr(log, attr)))
    log.handlers.clear()  # as in a fresh Lambda process, whatever an earlier test configured
    # the markers Powertools leaves on a logger it configured (restored, or removed, afterwards)
    for attr in ("init", "powertools_handler", "powertools_buffer_config", "powertools_buffer_cache"):
        patch.setattr(log, attr, None, raising=False)
    for handler in logging.root.handlers:  # Powertools adds a duplicate-suppressing filter to these
        patch.setattr(handler, "filters", copy.copy(handler.filters))


@pytest.fixture(scope="module")
def chat_worker(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Iterator[ModuleType]:
    """The handler module, cold-started with a fresh data directory (one per test module)."""
    with worker_handler_module(tmp_path_factory.mktemp("chat_worker_data")) as module:
        yield module
