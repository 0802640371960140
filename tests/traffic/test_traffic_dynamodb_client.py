"""On DynamoDB, the traffic engines of one app share one client (``clawdbot.traffic.aws.traffic_dynamodb``): one
client made at a cold start instead of three, one connection pool for the key, the limit and the latency streak."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi.testclient import TestClient

from clawdbot.api.app import create_app
from clawdbot.config.settings import DEFAULT_MODEL_DIR, Settings
from clawdbot.traffic.keys import hash_key

if TYPE_CHECKING:
    from pathlib import Path

    import pytest

KEY = "cb-shared-client-test-key-0123456789"


def test_the_traffic_engines_of_an_app_share_one_dynamodb_client(traffic_table: str, dynamodb_local: str,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    # GIVEN the chat API as the stack configures it: sessions, keys and limits in one DynamoDB table
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", dynamodb_local)
    settings = Settings(inference="sagemaker", sagemaker_endpoint="clawdbot-test", model_dir=DEFAULT_MODEL_DIR,
                        data_dir=tmp_path, session_store="dynamodb", dynamodb_table=traffic_table,
                        dynamodb_create_table=False, bootstrap_key_sha256=hash_key(KEY), metrics="emf")
    app = create_app(settings)
    traffic, store = app.state.traffic, app.state.resources.store
    # THEN the key store, the rate limiter and the latency guard's counter hold the same client
    shared = traffic.keys._client
    assert traffic.limiter._client is shared
    assert app.state.metrics.guard.counter._client is shared
    assert store._client is not shared  # the session store keeps its own (other timeouts, a bigger pool)
    assert not shared.created
    # AND a keyed request (the deploy key imported, its limit charged) makes that one client and works with it
    with TestClient(app) as client:
        answer = client.get("/v1/sessions/sess_0123456789abcdef0123456789abcdef",
                            headers={"authorization": f"Bearer {KEY}"})
    assert answer.status_code == 404, answer.text
    assert answer.headers["x-ratelimit-limit-requests"]
    assert shared.created and traffic.limiter.client is traffic.keys.client
