"""API keys on the real server (``clawdbot serve``), driven by the ``openai`` SDK and plain HTTP."""

from __future__ import annotations

import subprocess
import sys
from typing import TYPE_CHECKING

import openai
import pytest

from tests.traffic.conftest import create_key, free_port, run_cli

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.traffic.conftest import Server


def _sdk(server: Server, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.v1, api_key=key, max_retries=0)


def _assert_openai_error(body: dict, code: str) -> None:
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["code"] == code
    assert body["error"]["type"] == "invalid_request_error"


def test_loopback_server_without_keys_is_open_until_the_first_key(serve: Callable[..., Server],
                                                                   server_env: dict[str, str]) -> None:
    # GIVEN a server on loopback and an empty key store: `make serve` just works
    server = serve(server_env)
    assert server.client().get("/v1/models").status_code == 200
    assert _sdk(server, "anything-while-open").models.list().data

    # WHEN the operator creates a key (another process, same store)
    key = create_key(server_env, "alice")

    # THEN every route but /healthz needs it
    anonymous = server.client()
    missing = anonymous.get("/v1/models")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    _assert_openai_error(missing.json(), "missing_api_key")
    for method, path in [("POST", "/v1/sessions"), ("GET", "/v1/sessions/sess_x"),
                         ("POST", "/v1/chat/completions"), ("GET", "/v1/models/x"), ("GET", "/nope")]:
        assert anonymous.request(method, path).status_code == 401, path
    assert anonymous.get("/healthz").status_code == 200

    wrong = server.client("cb-not-a-real-key-0000000000000000000000000").get("/v1/models")
    assert wrong.status_code == 401
    _assert_openai_error(wrong.json(), "invalid_api_key")
    assert "cb-not-a-real-key" not in wrong.text  # the presented key is never echoed whole
    with pytest.raises(openai.AuthenticationError):
        _sdk(server, "cb-wrong").models.list()

    assert server.client(key).get("/v1/models").status_code == 200
    assert _sdk(server, key).models.list().data

    # AND a revoked key stops working
    run_cli(server_env, "keys", "revoke", "alice")
    with pytest.raises(openai.AuthenticationError):
        _sdk(server, key).models.list()


def test_server_bound_beyond_loopback_needs_a_key_even_with_none_created(serve: Callable[..., Server],
                                                                          server_env: dict[str, str]) -> None:
    server = serve(server_env, host="0.0.0.0")
    response = server.client().get("/v1/models")
    assert response.status_code == 401
    _assert_openai_error(response.json(), "missing_api_key")
    assert server.client().get("/healthz").status_code == 200


def test_sessions_belong_to_the_key_that_created_them(serve: Callable[..., Server],
                                                      server_env: dict[str, str]) -> None:
    alice, bob = create_key(server_env, "alice"), create_key(server_env, "bob")
    server = serve(server_env)
    created = server.client(alice).post("/v1/sessions", json={})
    assert created.status_code == 201
    session_id = created.json()["id"]
    assert server.client(alice).get(f"/v1/sessions/{session_id}").status_code == 200
    assert server.client(bob).get(f"/v1/sessions/{session_id}").status_code == 404
    assert server.client(bob).delete(f"/v1/sessions/{session_id}").status_code == 404


def test_keys_cli_lists_without_secrets(server_env: dict[str, str]) -> None:
    key = create_key(server_env, "ci", "--tier", "free", "--requests-per-minute", "9", "--daily-tokens", "0")
    listing = run_cli(server_env, "keys", "list").stdout
    assert "ci" in listing and "free" in listing and key not in listing
    as_json = run_cli(server_env, "keys", "list", "--json").stdout
    import json

    [row] = [json.loads(line) for line in as_json.splitlines()]
    assert row["requests_per_minute"] == 9 and row["daily_tokens"] is None and "key_hash" not in row


def test_the_deploy_key_is_the_first_key_and_closes_the_server(serve: Callable[..., Server],
                                                               server_env: dict[str, str]) -> None:
    # GIVEN a server configured with the deploy key's hash only (the stack passes the key's secret instead)
    import hashlib
    import json

    deploy_key = "operator-chosen-deploy-key-123"
    env = {**server_env, "CLAWDBOT_BOOTSTRAP_KEY_SHA256": hashlib.sha256(deploy_key.encode()).hexdigest()}
    server = serve(env)
    # THEN starting stored nothing (the key is imported when first presented: a cold start makes no call for it)
    assert run_cli(env, "keys", "list", "--json", "--all").stdout.strip() == ""
    # AND that key works, nothing else does, and it is listed as the first key, named "deploy"
    assert server.client().get("/v1/models").status_code == 401
    assert server.client(deploy_key).get("/v1/models").status_code == 200
    assert server.client().get("/v1/models").status_code == 401
    listing = run_cli(env, "keys", "list", "--json").stdout.splitlines()
    assert [json.loads(line)["name"] for line in listing] == ["deploy"]


def test_a_malformed_deploy_key_hash_stops_the_server_with_a_clear_error(server_env: dict[str, str]) -> None:
    # GIVEN a deploy key "hash" that is not a SHA-256 (it would never match a key, and the server would be shut)
    env = {**server_env, "CLAWDBOT_BOOTSTRAP_KEY_SHA256": "operator-chosen-deploy-key-123"}
    # WHEN the server starts THEN it refuses, naming the setting, with a usage error's status and no traceback
    done = subprocess.run([sys.executable, "-m", "clawdbot.cli.main", "serve", "--port", str(free_port())], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "invalid configuration" in done.stderr and "bootstrap_key_sha256" in done.stderr
    assert "Traceback" not in done.stderr
