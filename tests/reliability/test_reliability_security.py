"""Security: keys stored only as hashes and compared in constant time, no secret or message content in logs at the
default level, unguessable session ids, one key never reaching another key's sessions, and request limits.

Against ``clawdbot serve`` started as a user starts it (default log level), with keys made by ``clawdbot keys
create``; the log scan reads everything the server wrote, and the storage scan every byte the data folder holds.
"""

from __future__ import annotations

import ast
import hashlib
import itertools
import json
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from clawdbot.config.settings import REPO_ROOT
from tests.reliability.conftest import base_env

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.reliability.conftest import Figures, Serve

TRAFFIC_PACKAGE = REPO_ROOT / "layers" / "python" / "clawdbot" / "traffic"


def create_key(env: dict[str, str], name: str) -> str:
    done = subprocess.run([sys.executable, "-m", "clawdbot.cli.main", "keys", "create", "--name", name], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture
def keyed(serve: Callable[..., Serve], tmp_path: Path, model_dir: Path, sqs_server: str,
          aws_test_env: None) -> tuple[Serve, str, str]:
    """A server at the default log level with two keys, A and B, and queued turns enabled (so the turn routes
    reach their ownership check)."""
    import boto3

    queue_url = boto3.client("sqs", endpoint_url=sqs_server).create_queue(
        QueueName=f"clawdbot-security-{uuid.uuid4().hex[:8]}.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    env = {**base_env(tmp_path / "data", model_dir), "CLAWDBOT_QUEUE_URL": queue_url,
           "AWS_ENDPOINT_URL_SQS": sqs_server, "CLAWDBOT_SYSTEM_PROMPT": "SYSTEM-CANARY-7f3a You are clawdbot."}
    key_a, key_b = create_key(env, "alice"), create_key(env, "bob")
    return serve(env), key_a, key_b


# ------------------------------------------------------------------------------------------------ keys and logs
def test_no_key_or_message_content_in_logs_or_storage(keyed: tuple[Serve, str, str], model_id: str,
                                                      figures: Figures) -> None:
    server, key_a, _ = keyed
    client = server.client(key_a)
    canary = "MSG-CANARY-" + uuid.uuid4().hex
    wrong_key = "cb-" + uuid.uuid4().hex + "WRONGKEY"
    body = {"model": model_id, "max_tokens": 4, "messages": [{"role": "user", "content": f"My secret is {canary}"}]}

    # GIVEN a conversation carrying a canary, streamed and not, keyed and not, and a run of failing requests
    session_id = client.post("/v1/sessions", json={"system_prompt": f"prompt {canary}"}).json()["id"]
    for stream in (False, True):
        assert client.post("/v1/chat/completions", json={**body, "stream": stream},
                           headers={"x-session-id": session_id, "idempotency-key": canary[:40]}).status_code in (
            200, 422)
    replies = [m["content"] for m in client.get(f"/v1/sessions/{session_id}").json()["messages"]["data"]
               if m["role"] == "assistant"]
    failing = [
        client.post("/v1/chat/completions", json={**body, "model": canary}),
        client.post("/v1/chat/completions", json={**body, "temperature": canary}),
        client.post("/v1/chat/completions", content=f'{{"messages": "{canary}"', headers={
            "content-type": "application/json"}),
        client.post("/v1/chat/completions", json=body, headers={"x-session-id": f"sess_{canary}"}),
        client.post("/v1/chat/completions", json={**body, "max_tokens": 10_000}),
        client.post(f"/v1/sessions/{session_id}/feedback", json={"score": 9, "comment": canary}),
        httpx.post(f"{server.base_url}/v1/chat/completions", json=body,
                   headers={"authorization": f"Bearer {wrong_key}"}),
        httpx.post(f"{server.base_url}/v1/chat/completions", json=body),
    ]
    assert all(400 <= r.status_code < 500 for r in failing), [r.status_code for r in failing]
    figures.add("security_log_scan_requests", 2 + len(failing))
    server.stop()

    # THEN the server's whole output holds no key, no message, no system prompt and no reply
    log = server.log_text()
    secrets = {"key": key_a, "wrong key": wrong_key, "message": canary, "system prompt": "SYSTEM-CANARY-7f3a",
               **{f"reply {i}": r for i, r in enumerate(replies) if len(r) >= 12}}
    leaked = [name for name, value in secrets.items() if value in log]
    assert not leaked, f"found in the server log: {leaked}\n{log[-2000:]}"
    # ... and no file of the data folder holds a key's plaintext, only its SHA-256
    stored = b"".join(p.read_bytes() for p in (Path(server.env["CLAWDBOT_DATA_DIR"])).rglob("*") if p.is_file())
    assert key_a.encode() not in stored and wrong_key.encode() not in stored
    assert hashlib.sha256(key_a.encode()).hexdigest().encode() in stored


def test_the_lambda_path_logs_no_message_content(tmp_path: Path, model_dir: Path) -> None:
    # GIVEN the API's sample Lambda event with a canary message, run through the real handler at its default level
    canary = "LAMBDA-CANARY-" + uuid.uuid4().hex
    event = json.loads((REPO_ROOT / "events" / "chat-completion.json").read_text())
    body = json.loads(event["body"])
    body["messages"] = [{"role": "user", "content": f"remember {canary}"}]
    body["max_tokens"] = 4
    event["body"] = json.dumps(body)
    event["headers"]["content-length"] = str(len(event["body"]))
    path = tmp_path / "event.json"
    path.write_text(json.dumps(event))
    env = base_env(tmp_path / "data", model_dir)
    done = subprocess.run([sys.executable, "-m", "clawdbot.cli.main", "invoke", "functions/chat_api", str(path)],
                          env=env, capture_output=True, text=True, timeout=180, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr
    # THEN the turn ran (the response is on stdout), and the function's log (stderr) never carries the message
    assert json.loads(done.stdout)["statusCode"] == 200
    assert done.stderr.strip() and canary not in done.stderr


def test_key_hashes_are_compared_in_constant_time() -> None:
    # The one comparison of a presented key with a stored one goes through hmac.compare_digest ...
    keys_module = ast.parse((TRAFFIC_PACKAGE / "keys.py").read_text())
    matcher = next(n for n in ast.walk(keys_module) if isinstance(n, ast.FunctionDef) and n.name == "hashes_match")
    assert "hmac.compare_digest" in ast.unparse(matcher)
    # ... and no code in traffic control compares a key or a hash with == (which stops at the first difference)
    offenders = []
    for path in TRAFFIC_PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare) and any(isinstance(op, ast.Eq | ast.NotEq) for op in node.ops):
                text = ast.unparse(node)
                if re.search(r"hash|plaintext|presented|token\b|secret", text, re.IGNORECASE):
                    offenders.append(f"{path.name}:{node.lineno}: {text}")
    assert not offenders, offenders
    from clawdbot.traffic.keys import hash_key, hashes_match

    stored = hash_key("cb-example")
    assert hashes_match(stored, hash_key("cb-example")) and not hashes_match(stored, hash_key("cb-examplf"))


# ------------------------------------------------------------------------------------------------ sessions
def test_session_ids_are_unguessable(serve: Callable[..., Serve], tmp_path: Path, model_dir: Path) -> None:
    client = serve(base_env(tmp_path / "data", model_dir)).client()
    ids = [client.post("/v1/sessions", json={}).json()["id"] for _ in range(200)]
    # 128 random bits each: the right shape, all distinct, no shared prefix (not sequential, not time-based) ...
    assert all(re.fullmatch(r"sess_[0-9a-f]{32}", i) for i in ids) and len(set(ids)) == len(ids)
    ordered = sorted(i[5:] for i in ids)
    longest_shared = max(next((i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y), len(a))
                         for a, b in itertools.pairwise(ordered))
    assert longest_shared < 8
    # ... and half the bits set, as random bits are (200 x 128 bits: 0.5 +- 0.02 is over 6 sigma)
    bits = "".join(bin(int(i[5:], 16))[2:].zfill(128) for i in ids)
    assert abs(bits.count("1") / len(bits) - 0.5) < 0.02


def _probe(client: httpx.Client, method: str, path: str, model: str) -> httpx.Response:
    """A plausible request for each session route (bodies valid, so only ownership can refuse them)."""
    bodies: dict[str, Any] = {
        "feedback": {"score": 5, "comment": "great"},
        "turns": {"content": "hello"},
    }
    body = next((v for k, v in bodies.items() if path.rstrip("/").endswith(k)), None)
    return client.request(method, path, json=body if method in ("POST", "PUT", "PATCH") else None)


def test_one_key_cannot_reach_another_keys_sessions_on_any_route(keyed: tuple[Serve, str, str],
                                                                 model_id: str, figures: Figures) -> None:
    server, key_a, key_b = keyed
    alice, bob = server.client(key_a), server.client(key_b)
    session_id = alice.post("/v1/sessions", json={}).json()["id"]
    body = {"model": model_id, "max_tokens": 4, "user": "carol",
            "messages": [{"role": "user", "content": "Alice's private question"}]}
    turn = alice.post("/v1/chat/completions", json=body, headers={"x-session-id": session_id})
    assert turn.status_code == 200
    before = alice.get(f"/v1/sessions/{session_id}").json()

    # WHEN bob tries every operation on a session path, on alice's session
    spec = alice.get("/openapi.json").json()
    probes = [(method.upper(), path) for path, item in spec["paths"].items() if "{session_id}" in path
              for method in item if method in ("get", "post", "put", "patch", "delete")]
    assert {("GET", "/v1/sessions/{session_id}"), ("DELETE", "/v1/sessions/{session_id}")} <= set(probes)
    refused = []
    for method, path in probes:
        concrete = path.replace("{session_id}", session_id).replace("{turn_id}", turn.json()["id"])
        answer = _probe(bob, method, concrete, model_id)
        refused.append((method, path, answer.status_code, answer.json().get("error", {}).get("code")))
    # ... and through the chat route's header, and through the user field alice used
    as_header = bob.post("/v1/chat/completions", json=body, headers={"x-session-id": session_id})
    as_user = bob.post("/v1/chat/completions", json=body)
    figures.add("security_ownership_probes", len(probes) + 2)

    # THEN each is the 404 an unknown session gets: bob cannot even learn the session exists
    assert all(status == 404 and code == "session_not_found" for _, _, status, code in refused), refused
    assert as_header.status_code == 404 and as_header.json()["error"]["code"] == "session_not_found"
    # ... bob's "carol" is bob's own conversation, not alice's
    assert as_user.status_code == 200 and as_user.headers["x-session-id"] != turn.headers.get("x-session-id")
    carol_of_bob = bob.get(f"/v1/sessions/{as_user.headers['x-session-id']}").json()["messages"]["data"]
    assert [m["content"] for m in carol_of_bob if m["role"] == "user"] == ["Alice's private question"]
    # ... and alice's session is untouched
    after = alice.get(f"/v1/sessions/{session_id}").json()
    assert after["message_count"] == before["message_count"] == 2
    assert after["messages"]["data"] == before["messages"]["data"]


# ------------------------------------------------------------------------------------------------ limits
def test_request_body_and_message_count_limits(serve: Callable[..., Serve], tmp_path: Path, model_dir: Path,
                                               model_id: str) -> None:
    env = {**base_env(tmp_path / "data", model_dir), "CLAWDBOT_MAX_BODY_BYTES": "20000",
           "CLAWDBOT_MAX_MESSAGES": "16"}
    server = serve(env)
    client = server.client()
    message = {"role": "user", "content": "x"}

    big = client.post("/v1/chat/completions", json={"model": model_id, "messages": [
        {"role": "user", "content": "y" * 30_000}]})
    # A body without Content-Length (chunked) is cut off as it arrives, not read whole first.
    chunked = client.post("/v1/chat/completions", content=iter([b'{"model": "m", "messages": [', b" " * 25_000]),
                          headers={"content-type": "application/json"})
    too_many = client.post("/v1/chat/completions", json={"model": model_id, "messages": [message] * 17})
    enough = client.post("/v1/chat/completions", json={"model": model_id, "max_tokens": 2,
                                                       "messages": [message] * 16})

    assert big.status_code == chunked.status_code == 413
    assert big.json()["error"]["code"] == "request_too_large"
    assert too_many.status_code == 400 and too_many.json()["error"]["code"] == "too_many_messages"
    assert enough.status_code == 200
    assert server.process.poll() is None
