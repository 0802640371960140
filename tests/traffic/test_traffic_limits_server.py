"""Rate limits, quotas and the concurrency cap on real servers: the ``openai`` SDK must see OpenAI's behaviour."""

from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING

import openai
import pytest

from tests.traffic.conftest import create_key, gauge, wait_for

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from tests.traffic.conftest import Server

HEADERS = ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests",
           "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens")


@pytest.fixture
def sdk() -> Iterator[Callable[[Server, str], openai.OpenAI]]:
    """OpenAI clients of a server, closed after the test (their pooled connections with them)."""
    clients: list[openai.OpenAI] = []

    def make(server: Server, key: str) -> openai.OpenAI:
        clients.append(openai.OpenAI(base_url=server.v1, api_key=key, max_retries=0))
        return clients[-1]

    yield make
    for client in clients:
        client.close()


def test_sdk_sees_ratelimit_headers_and_raises_rate_limit_error(
        serve: Callable[..., Server], server_env: dict[str, str], sdk: Callable[[Server, str], openai.OpenAI]) -> None:
    key = create_key(server_env, "limited", "--requests-per-minute", "3", "--tokens-per-minute", "600",
                     "--daily-tokens", "0")
    server = serve(server_env)
    client = sdk(server, key)
    model = client.models.list().data[0].id  # request 1 of 3

    # a chat turn: every x-ratelimit-* header, in OpenAI's names
    started = time.monotonic()
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "Hello there!"}], max_tokens=6, temperature=0)
    assert all(name in raw.headers for name in HEADERS)
    assert raw.headers["x-ratelimit-limit-requests"] == "3"
    assert raw.headers["x-ratelimit-remaining-requests"] == "1"
    assert raw.headers["x-ratelimit-limit-tokens"] == "600"
    used = raw.parse().usage.total_tokens

    # the turn's tokens were charged when it finished: the next response reports them gone (minus the refill)
    third = client.models.with_raw_response.list()
    elapsed = time.monotonic() - started
    remaining = int(third.headers["x-ratelimit-remaining-tokens"])
    assert 600 - used <= remaining <= min(600, 600 - used + 10 * elapsed + 1)
    assert third.headers["x-ratelimit-remaining-requests"] == "0"

    # the fourth request within the minute: 429, RateLimitError in the SDK, Retry-After set
    with pytest.raises(openai.RateLimitError) as caught:
        client.models.list()
    response = caught.value.response
    assert response.status_code == 429
    assert 1 <= int(response.headers["retry-after"]) <= 20
    assert response.headers["x-ratelimit-remaining-requests"] == "0"
    body = response.json()["error"]
    assert (body["type"], body["code"]) == ("rate_limit_error", "rate_limit_exceeded")
    assert caught.value.code == "rate_limit_exceeded"


def test_daily_quota_is_a_429_insufficient_quota(serve: Callable[..., Server], server_env: dict[str, str],
                                                 sdk: Callable[[Server, str], openai.OpenAI]) -> None:
    key = create_key(server_env, "quota", "--tier", "unlimited", "--daily-tokens", "5")
    server = serve(server_env)
    client = sdk(server, key)
    model = client.models.list().data[0].id
    client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi!"}], max_tokens=4)
    with pytest.raises(openai.RateLimitError) as caught:
        client.models.list()
    assert caught.value.code == "insufficient_quota"
    assert int(caught.value.response.headers["retry-after"]) <= 86_400
    assert "x-ratelimit-limit-requests" not in caught.value.response.headers  # unlimited per minute


def test_limits_hold_across_two_servers_sharing_redis(serve: Callable[..., Server], server_env: dict[str, str],
                                                      redis_server: str) -> None:
    # GIVEN two server processes on one Redis (sessions, keys and buckets)
    env = {**server_env, "CLAWDBOT_SESSION_STORE": "redis", "CLAWDBOT_REDIS_URL": redis_server}
    key = create_key(env, "shared", "--requests-per-minute", "4", "--tokens-per-minute", "0", "--daily-tokens",
                     "0")
    first, second = serve(env), serve(env)
    clients = [first.client(key), second.client(key)]

    # WHEN requests alternate between them
    responses = [clients[i % 2].get("/v1/models") for i in range(6)]

    # THEN the key's 4 requests per minute are spent across both, in order, and both refuse the rest
    assert [r.status_code for r in responses] == [200, 200, 200, 200, 429, 429]
    assert [r.headers["x-ratelimit-remaining-requests"] for r in responses] == ["3", "2", "1", "0", "0", "0"]
    assert all("x-ratelimit-limit-tokens" not in r.headers for r in responses)


def _stalled_request(server: Server) -> socket.socket:
    """A request that holds a slot: its headers promise a body that never comes."""
    host, port = server.base_url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                 b"content-length: 1000\r\n\r\n{")
    return sock


def test_concurrency_cap_queues_then_answers_503(serve: Callable[..., Server], server_env: dict[str, str]) -> None:
    env = {**server_env, "CLAWDBOT_MAX_CONCURRENCY": "1", "CLAWDBOT_MAX_QUEUE": "0"}
    server = serve(env)
    client = server.client()
    assert client.get("/v1/models").status_code == 200
    stalled = _stalled_request(server)
    try:
        wait_for(lambda: gauge(client, "clawdbot_requests_in_flight") == 1, "the stalled request holds the slot")
        refused = client.get("/v1/models")
        assert refused.status_code == 503
        assert refused.headers["retry-after"].isdigit()
        assert refused.json()["error"]["code"] == "server_overloaded"
        assert client.get("/healthz").status_code == 200  # probes bypass the cap
    finally:
        stalled.close()
    wait_for(lambda: gauge(client, "clawdbot_requests_in_flight") == 0, "the slot is released")
    assert client.get("/v1/models").status_code == 200


def test_a_queued_request_waits_for_the_slot(serve: Callable[..., Server], server_env: dict[str, str]) -> None:
    import threading

    env = {**server_env, "CLAWDBOT_MAX_CONCURRENCY": "1", "CLAWDBOT_MAX_QUEUE": "4",
           "CLAWDBOT_QUEUE_TIMEOUT_SECONDS": "120"}
    server = serve(env)
    client = server.client()
    stalled = _stalled_request(server)
    wait_for(lambda: gauge(client, "clawdbot_requests_in_flight") == 1, "the stalled request holds the slot")
    result: list[int] = []
    waiter = threading.Thread(target=lambda: result.append(server.client().get("/v1/models").status_code))
    waiter.start()
    wait_for(lambda: gauge(client, "clawdbot_requests_queued") == 1, "the second request is queued")
    assert not result  # queued behind the stalled request, not refused
    stalled.close()
    waiter.join(timeout=60)
    assert result == [200]


def test_an_unreachable_limiter_store_is_a_503_not_a_crash(serve: Callable[..., Server], server_env: dict[str, str],
                                                            tmp_path: Path) -> None:
    import shutil
    import subprocess

    from tests.traffic.conftest import free_port

    # GIVEN a server whose keys and buckets live in a Redis of its own
    port = free_port()
    redis = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind",
                              "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        env = {**server_env, "CLAWDBOT_SESSION_STORE": "redis", "CLAWDBOT_REDIS_URL": f"redis://127.0.0.1:{port}/0"}
        wait_for(lambda: _redis_up(port), "redis-server answers")
        key = create_key(env, "k", "--requests-per-minute", "100")
        client = serve(env).client(key)
        assert client.get("/v1/models").status_code == 200
    finally:
        redis.terminate()
        redis.wait(timeout=10)
    # WHEN Redis goes away THEN requests are refused with a retryable 503 in OpenAI's shape
    response = client.get("/v1/models")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "traffic_control_unavailable"
    assert response.headers["retry-after"] == "1"


def _redis_up(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False
