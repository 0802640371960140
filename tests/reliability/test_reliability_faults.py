"""Faults: the model endpoint times out, fails, throttles or dies mid-stream; the store throttles or goes away;
the server itself is killed mid-turn.

What must hold each time: the client gets the right status (429/502/503/504, with ``Retry-After`` where it
applies), the session is exactly as before (a failed turn stores nothing, never half a turn), retries back off and
stop, and the service works again once the fault is gone. Faults come from a fault-injecting proxy or router in
front of the real dependency, or from killing a real process.
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from clawdbot.reliability.consistency import check_sessions, check_store
from tests.reliability.conftest import backing_for, base_env
from tests.reliability.faults import DynamoDBFaultProxy, TcpFaultProxy
from tests.sagemaker.router import Fault, SageMakerRouter, model_error, model_timeout, throttling

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from clawdbot.sessions.base import SessionStore
    from tests.reliability.conftest import Figures, Serve
    from tests.sagemaker.conftest import Container

ENDPOINT = "clawdbot-reliability-endpoint"


def turn(client: httpx.Client, model: str, session_id: str, content: str = "Hello!", *,
         stream: bool = False, max_tokens: int = 4) -> tuple[int, dict[str, str], list[str] | dict[str, Any]]:
    """(status, headers, JSON body or SSE data lines) of one turn."""
    body = {"model": model, "max_tokens": max_tokens, "temperature": 0, "stream": stream,
            "messages": [{"role": "user", "content": content}]}
    headers = {"x-session-id": session_id}
    if not stream:
        response = client.post("/v1/chat/completions", json=body, headers=headers)
        return response.status_code, dict(response.headers), response.json()
    with client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as response:
        if response.status_code != 200:
            response.read()
            return response.status_code, dict(response.headers), response.json()
        events = [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]
    return response.status_code, dict(response.headers), events


def message_count(client: httpx.Client, session_id: str) -> int:
    return int(client.get(f"/v1/sessions/{session_id}").json()["message_count"])


# =========================================================================================== the model endpoint
@pytest.fixture(scope="module")
def bundle_dir(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from clawdbot.inference.tokenizer_bundle import copy_bundle

    return copy_bundle(model_dir, tmp_path_factory.mktemp("bundle") / model_dir.resolve().name)


@pytest.fixture(scope="module")
def container(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    from tests.sagemaker.conftest import start_container, stop_container

    started = start_container(model_dir, tmp_path_factory.mktemp("container") / "serve.log")
    yield started
    stop_container(started)


@dataclass
class SageMakerDeployment:
    """``clawdbot serve`` configured as on Lambda (``CLAWDBOT_INFERENCE=sagemaker``), the router in front of the
    real container, and a client."""

    server: Serve
    router: SageMakerRouter
    client: httpx.Client
    model: str

    def new_session(self) -> str:
        return str(self.client.post("/v1/sessions", json={}).json()["id"])


@pytest.fixture(scope="module")
def sagemaker(container: Container, bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory,
              aws_test_env: None) -> Iterator[SageMakerDeployment]:
    from tests.reliability.conftest import start_serve

    data = tmp_path_factory.mktemp("sagemaker-serve")
    with SageMakerRouter(container.url) as router:
        env = base_env(data / "data", bundle_dir)
        env.update({"CLAWDBOT_INFERENCE": "sagemaker", "CLAWDBOT_SAGEMAKER_ENDPOINT": ENDPOINT,
                    "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": router.url, "CLAWDBOT_SAGEMAKER_MAX_ATTEMPTS": "3",
                    "CLAWDBOT_SAGEMAKER_READ_TIMEOUT": "2", "CLAWDBOT_SAGEMAKER_RETRY_AFTER_SECONDS": "2"})
        server = start_serve(env, data / "serve.log")
        client = server.client()
        try:
            yield SageMakerDeployment(server, router, client, bundle_dir.name)
        finally:
            server.stop()


@pytest.fixture
def deployment(sagemaker: SageMakerDeployment) -> SageMakerDeployment:
    sagemaker.router.reset()
    return sagemaker


# (faults queued, streamed?, status, Retry-After expected, endpoint calls expected)
INFERENCE_FAULTS = [
    pytest.param([throttling()] * 3, False, 429, True, 3, id="throttled-every-retry"),
    pytest.param([throttling()] * 3, True, 429, True, 3, id="throttled-every-retry-stream"),
    pytest.param([throttling()], False, 200, False, 2, id="throttled-once-then-retried"),
    pytest.param([model_error(500, '{"error": {"message": "CUDA error", "type": "server_error"}}')], False, 502,
                 False, 1, id="model-5xx"),
    pytest.param([model_error(500, "boom")], True, 502, False, 1, id="model-5xx-stream"),
    pytest.param([model_timeout()], False, 504, False, 1, id="model-timeout"),
    pytest.param([Fault("delay", seconds=3.0)] * 3, False, 504, False, 3, id="read-timeout"),
    pytest.param([Fault("error", "ServiceUnavailable", 503, "down")] * 3, False, 503, True, 3,
                 id="endpoint-unavailable"),
]


@pytest.mark.parametrize(("faults", "stream", "status", "retry_after", "calls"), INFERENCE_FAULTS)
def test_inference_faults_reach_the_client_as_the_right_error_and_store_nothing(
        deployment: SageMakerDeployment, faults: list[Fault], stream: bool, status: int, retry_after: bool,
        calls: int, figures: Figures) -> None:
    session_id = deployment.new_session()
    assert turn(deployment.client, deployment.model, session_id)[0] == 200
    deployment.router.reset()

    # WHEN the endpoint misbehaves as scripted
    deployment.router.fail_next(*faults)
    got, headers, _ = turn(deployment.client, deployment.model, session_id, "Are you there?", stream=stream)
    figures.add("faults_injected", len(faults))

    # THEN the client gets the mapped status, with Retry-After when waiting helps
    assert got == status
    assert ("retry-after" in headers) is retry_after
    if retry_after:
        assert int(headers["retry-after"]) >= 1
    # ... the client's retries stopped where configured (throttling and timeouts are retried; a model error not)
    assert len(deployment.router.requests) == calls
    # ... and the session holds the earlier turn plus this one only if it succeeded
    assert message_count(deployment.client, session_id) == (4 if status == 200 else 2)
    # ... and the service is fine afterwards
    assert turn(deployment.client, deployment.model, session_id, "Still there?")[0] == 200
    figures.add("faults_survived", len(faults))


@pytest.mark.parametrize("fault", [
    Fault("stream_error", "ModelStreamError", message="The stream was broken (StreamBroken)", after_parts=2),
    Fault("stream_error", "ModelStreamError", message="Model invocation time exceeded", after_parts=2),
    Fault("truncate", after_parts=2),
    Fault("stall", seconds=3.0, after_parts=2),
], ids=["broken", "timed-out", "cut-short", "went-silent"])
def test_a_stream_that_dies_midway_ends_with_an_error_and_stores_nothing(
        deployment: SageMakerDeployment, fault: Fault, figures: Figures) -> None:
    session_id = deployment.new_session()
    deployment.router.fail_next(fault)
    status, _, events = turn(deployment.client, deployment.model, session_id, "Tell me more", stream=True,
                             max_tokens=32)
    figures.add("faults_injected")

    # THEN the stream started (text arrived), then ended with an in-band error and [DONE], as OpenAI's does
    assert status == 200 and isinstance(events, list) and events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["code"] in ("upstream_error", "upstream_timeout")
    assert any(json.loads(e).get("choices") and json.loads(e)["choices"][0]["delta"].get("content")
               for e in events[:-2])
    assert message_count(deployment.client, session_id) == 0
    figures.add("faults_survived")


def test_a_model_container_killed_mid_stream(container: Container, bundle_dir: Path, model_dir: Path,
                                            serve: Callable[..., Serve], tmp_path: Path, figures: Figures,
                                            aws_test_env: None) -> None:
    from tests.sagemaker.conftest import start_container, stop_container

    own = start_container(model_dir, tmp_path / "own-container.log")
    try:
        with SageMakerRouter(own.url) as router:
            env = base_env(tmp_path / "data", bundle_dir)
            env.update({"CLAWDBOT_INFERENCE": "sagemaker", "CLAWDBOT_SAGEMAKER_ENDPOINT": ENDPOINT,
                        "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": router.url, "CLAWDBOT_SAGEMAKER_MAX_ATTEMPTS": "2",
                        "CLAWDBOT_SAGEMAKER_READ_TIMEOUT": "5"})
            client = serve(env).client()
            model = bundle_dir.name
            session_id = client.post("/v1/sessions", json={}).json()["id"]
            body = {"model": model, "max_tokens": 400, "temperature": 1.0, "stream": True,
                    "messages": [{"role": "user", "content": "Tell me a long story."}]}
            # GIVEN a streamed turn under way; WHEN the model's container is SIGKILLed after the first text
            lines: list[str] = []
            with client.stream("POST", "/v1/chat/completions", json=body,
                               headers={"x-session-id": session_id}) as response:
                assert response.status_code == 200
                for line in response.iter_lines():
                    lines.append(line)
                    if '"content": "' in line and '"content": ""' not in line and own.process.poll() is None:
                        own.process.kill()
                        own.process.wait()
            figures.add("faults_injected")
            figures.add("process_kills")
            events = [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]
            # THEN the stream ends with an in-band upstream error (the text may have been complete already when
            # the kill landed: then the turn is whole and stored)
            assert events[-1] == "[DONE]"
            finished = '"error"' not in events[-2]
            assert message_count(client, session_id) == (2 if finished else 0)
            # ... a turn while the model is down is a 502 and stores nothing
            status, _, answer = turn(client, model, session_id, "Hello?")
            assert status == 502 and answer["error"]["code"] == "upstream_error"
            # ... and once a new container is up, turns work again
            revived = start_container(model_dir, tmp_path / "revived-container.log")
            try:
                router.instances[0] = ("127.0.0.1", int(revived.url.rsplit(":", 1)[1]))  # the instance replaced
                assert turn(client, model, session_id, "Back?")[0] == 200
            finally:
                stop_container(revived)
            assert message_count(client, session_id) == (4 if finished else 2)
            figures.add("faults_survived")
    finally:
        if own.process.poll() is None:
            stop_container(own)


# =========================================================================================== the session store
def test_dynamodb_throttling_appends_fails_the_turn_cleanly_and_retries_stop(
        request: pytest.FixtureRequest, serve: Callable[..., Serve], tmp_path: Path, model_dir: Path,
        model_id: str, stores: list[SessionStore], figures: Figures, aws_test_env: None) -> None:
    proxy = DynamoDBFaultProxy(request.getfixturevalue("dynamodb_local"))
    try:
        backing = backing_for("dynamodb", request, tmp_path / "data", model_dir, dynamodb_url=proxy.url)
        store = backing.make_store()
        stores.append(store)
        client = serve(backing.env).client()
        session_id = client.post("/v1/sessions", json={}).json()["id"]
        assert turn(client, model_id, session_id)[0] == 200

        # WHEN every append (one TransactWriteItems) is throttled
        proxy.throttle("TransactWriteItems")
        plain = turn(client, model_id, session_id, "Throttled?")
        streamed = turn(client, model_id, session_id, "Throttled stream?", stream=True)
        attempts = proxy.throttled["TransactWriteItems"]
        figures.add("faults_injected", attempts)
        times = [t for op, t in proxy.throttle_times if op == "TransactWriteItems"][:3]
        figures.set("dynamodb_throttle_retry_gaps_s", [round(b - a, 3) for a, b in itertools.pairwise(times)])

        # THEN the plain turn is a 503 with Retry-After, after the client's 4 attempts and no more
        status, headers, answer = plain
        assert status == 503 and answer["error"]["code"] == "store_unavailable"
        assert int(headers["retry-after"]) >= 1
        # ... the streamed one (the reply is generated first, stored last) ends with the same error in-band
        s_status, _, events = streamed
        assert s_status == 200 and json.loads(events[-2])["error"]["code"] == "store_unavailable"
        assert attempts == 8  # 4 per turn (botocore: the call and 3 retries), then it stops
        # ... and nothing of either turn was written: every transcript item belongs to the first turn
        report = check_sessions(store, [session_id])
        assert report.ok and report.entries == 2, report.problems

        # WHEN throttling stops, turns work again
        proxy.clear()
        assert turn(client, model_id, session_id, "Better now?")[0] == 200
        report = check_sessions(store, [session_id])
        assert report.ok and report.turns == 2, report.problems
        figures.add("faults_survived", attempts)
    finally:
        proxy.close()


@pytest.mark.parametrize("kind", ["redis", "dynamodb"])
def test_an_unreachable_store_is_a_503_and_the_service_recovers(
        kind: str, request: pytest.FixtureRequest, serve: Callable[..., Serve], tmp_path: Path, model_dir: Path,
        model_id: str, stores: list[SessionStore], figures: Figures, aws_test_env: None) -> None:
    upstream = request.getfixturevalue("redis_server" if kind == "redis" else "dynamodb_local")
    proxy = TcpFaultProxy(int(upstream.rsplit(":", 1)[1].split("/")[0]))
    try:
        backing = backing_for(kind, request, tmp_path / "data", model_dir,
                              redis_url=proxy.url("redis") + "/0" if kind == "redis" else None,
                              dynamodb_url=proxy.url("http") if kind == "dynamodb" else None)
        # Keys are read once and cached, so that the store's own errors (not traffic control's) reach the client.
        backing.env["CLAWDBOT_KEY_CACHE_SECONDS"] = "600"
        store = backing.make_store()
        stores.append(store)
        client = serve(backing.env).client(timeout=60)
        session_id = client.post("/v1/sessions", json={}).json()["id"]
        assert turn(client, model_id, session_id)[0] == 200

        # WHEN the store goes away (open connections cut, new ones refused)
        proxy.refuse()
        answers = [turn(client, model_id, session_id, "Anyone?"),
                   (lambda r: (r.status_code, dict(r.headers), r.json()))(client.get(f"/v1/sessions/{session_id}")),
                   (lambda r: (r.status_code, dict(r.headers), r.json()))(client.post("/v1/sessions", json={}))]
        figures.add("faults_injected", len(answers))
        # THEN every request is a 503 in OpenAI's shape with Retry-After, never a 500 or a hang
        for status, headers, body in answers:
            assert status == 503, body
            assert body["error"]["type"] == "server_error" and int(headers["retry-after"]) >= 1

        # WHEN the store is back, the service is too, and the session is as it was plus the new turn
        proxy.restore()
        assert turn(client, model_id, session_id, "Back?")[0] == 200
        report = check_sessions(store, [session_id])
        assert report.ok and report.turns == 2, report.problems
        figures.add("faults_survived", len(answers))
    finally:
        proxy.close()


# =========================================================================================== the server itself
@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_a_server_killed_under_load_leaves_only_whole_turns(
        kind: str, request: pytest.FixtureRequest, serve: Callable[..., Serve], tmp_path: Path, model_dir: Path,
        model_id: str, stores: list[SessionStore], figures: Figures, aws_test_env: None) -> None:
    backing = backing_for(kind, request, tmp_path / f"data-{uuid.uuid4().hex[:6]}", model_dir)
    server = serve(backing.env)
    client = server.client()
    sessions = [client.post("/v1/sessions", json={}).json()["id"] for _ in range(4)]
    done: list[int] = []

    def chatter(index: int) -> None:
        session_id = sessions[index % len(sessions)]
        for n in range(50):
            try:
                status = turn(client, model_id, session_id, f"turn {index}-{n}", stream=n % 2 == 0,
                              max_tokens=16)[0]
            except httpx.TransportError:
                return
            done.append(status)

    # GIVEN 8 clients chatting on 4 sessions; WHEN the server is SIGKILLed in the middle of it
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(chatter, i) for i in range(8)]
        while len(done) < 40 and not all(f.done() for f in futures):
            time.sleep(0.01)
        server.kill()
        for future in futures:
            future.result()
    figures.add("faults_injected")
    figures.add("process_kills")
    # THEN every session holds whole turns only, gap-free
    store = backing.make_store()
    stores.append(store)
    report = check_sessions(store, sessions)
    assert report.ok, report.problems
    assert set(done) == {200} and report.turns >= len(done)  # every answered turn is stored, whole
    # ... and a restarted server carries on where the data left off
    revived = serve(backing.env, port=server.port).client()
    for session_id in sessions:
        before = message_count(revived, session_id)
        assert turn(revived, model_id, session_id, "after the crash")[0] == 200
        assert message_count(revived, session_id) == before + 2
    if kind == "sqlite":
        assert check_store(store).ok
    figures.add("faults_survived")
