"""The inference container over plain HTTP: SageMaker's hosting contract, OpenAI's chat shape."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import httpx
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from clawdbot.inference.container import create_app, load_onnx_backend, resolve_model_dir
from clawdbot.inference.tokenizer_bundle import TokenizerBundle
from clawdbot.inference.types import ChatMessage
from tests.fixtures.probes import no_end_bias
from tests.sagemaker.conftest import SERVE, free_port, start_container, stop_container

if TYPE_CHECKING:
    from pathlib import Path

    from tests.sagemaker.conftest import Container

HELLO = [{"role": "system", "content": "You are clawdbot."}, {"role": "user", "content": "Hello! How are you?"}]


def sse_payloads(text: str) -> list[str]:
    assert text.endswith("\n\n"), "every event ends with a blank line"
    return [event.removeprefix("data: ") for event in text.split("\n\n") if event]


def test_ping_answers_503_until_the_model_is_loaded(model_dir: Path) -> None:
    import uvicorn

    # GIVEN the container app whose model load is held back until we release it
    release = threading.Event()

    def loader() -> object:
        release.wait(30)
        return load_onnx_backend(model_dir, threads=1)

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(loader, max_concurrency=1), host="127.0.0.1", port=port,
                                           lifespan="on", log_level="warning", ws="none"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    try:
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        base = f"http://127.0.0.1:{port}"
        # WHEN the server listens but the model is still loading
        # THEN SageMaker's health check is told "not yet" and invocations are refused the same way
        assert httpx.get(f"{base}/ping").status_code == 503
        refused = httpx.post(f"{base}/invocations", json={"messages": HELLO})
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "service_unavailable"
        # WHEN the load completes
        release.set()
        while (ping := httpx.get(f"{base}/ping")).status_code == 503 and time.monotonic() < deadline:
            time.sleep(0.02)
        # THEN /ping is 200 and the model answers
        assert ping.status_code == 200 and ping.json()["model"] == model_dir.resolve().name
        answer = httpx.post(f"{base}/invocations", json={"messages": HELLO, "max_tokens": 3}, timeout=60)
        assert answer.status_code == 200
    finally:
        release.set()
        server.should_exit = True
        thread.join(30)


def test_serve_entry_point_reports_ready(container: Container) -> None:
    # The session's container went: nothing listening (0) / loading (503) ... then ready (200), nothing else.
    assert container.ping_statuses[-1] == 200
    assert set(container.ping_statuses) <= {0, 503, 200}
    assert httpx.get(f"{container.url}/execution-parameters").json()["MaxConcurrentTransforms"] >= 1


def test_serve_exits_when_the_model_cannot_load(tmp_path: Path) -> None:
    # GIVEN a model folder without the graph (a broken model.tar.gz)
    broken = tmp_path / "model"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    container = start_container(broken, tmp_path / "serve.log", wait=False)
    try:
        status = container.process.wait(timeout=60)
    finally:
        if container.process.poll() is None:
            stop_container(container)
    # THEN the process stops with an error naming what is missing, instead of failing health checks for hours
    assert status == 1
    assert "model.onnx" in container.log() and "tokenizer.json" in container.log()


def test_model_dir_follows_sagemaker_conventions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SM_MODEL_DIR", raising=False)
    assert str(resolve_model_dir()) == "/opt/ml/model"
    monkeypatch.setenv("SM_MODEL_DIR", str(tmp_path))
    assert resolve_model_dir() == tmp_path
    # A model.tar.gz packed with its folder on top unpacks one level down: that folder is the model.
    (tmp_path / "clawdbot-tiny-chat").mkdir()
    (tmp_path / "clawdbot-tiny-chat" / "config.json").write_text("{}")
    assert resolve_model_dir() == tmp_path / "clawdbot-tiny-chat"
    assert resolve_model_dir(tmp_path / "elsewhere") == tmp_path / "elsewhere"


def test_invocation_answers_an_openai_chat_completion(container: Container, bundle_dir: Path) -> None:
    response = httpx.post(f"{container.url}/invocations",
                          json={"messages": HELLO, "max_tokens": 12, "temperature": 0}, timeout=60)
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    completion = ChatCompletion.model_validate(response.json())
    assert completion.object == "chat.completion" and completion.choices[0].message.role == "assistant"
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert completion.usage is not None and 1 <= completion.usage.completion_tokens <= 12
    # The Lambda's count (tokenizer bundle) is the count the model reports.
    messages = [ChatMessage(m["role"], m["content"]) for m in HELLO]
    assert completion.usage.prompt_tokens == TokenizerBundle(bundle_dir).count_prompt_tokens(messages)


def test_a_caller_that_hangs_up_stops_the_model(container: Container, model_dir: Path) -> None:
    # GIVEN a call that would generate until the context is full (its end-of-sequence tokens banned)
    body = json.dumps({"messages": HELLO, "max_tokens": 400, "temperature": 1.0, "logit_bias": no_end_bias(model_dir)})
    host, port = container.url.removeprefix("http://").split(":")
    logged = container.log().count("The client closed the connection")
    # WHEN the caller (the chat API's SageMaker client, timing out) hangs up without reading the answer
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(f"POST /invocations HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
                     f"content-length: {len(body)}\r\n\r\n{body}".encode())
    # THEN the container stops the model and logs it (a generation run to its end logs nothing)
    deadline = time.monotonic() + 60
    while container.log().count("The client closed the connection") == logged:
        assert time.monotonic() < deadline, f"the container did not stop the generation:\n{container.log()}"
        time.sleep(0.05)
    # and answers the next call as usual
    assert httpx.post(f"{container.url}/invocations", json={"messages": HELLO, "max_tokens": 3},
                      timeout=60).status_code == 200


def test_streamed_invocation_is_openai_server_sent_events(container: Container) -> None:
    body = {"messages": HELLO, "max_tokens": 12, "temperature": 0}
    whole = httpx.post(f"{container.url}/invocations", json=body, timeout=60).json()
    response = httpx.post(f"{container.url}/invocations", timeout=60,
                          json={**body, "stream": True, "stream_options": {"include_usage": True}})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    payloads = sse_payloads(response.text)
    assert payloads[-1] == "[DONE]"
    chunks = [ChatCompletionChunk.model_validate(json.loads(p)) for p in payloads[:-1]]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({c.id for c in chunks}) == 1
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole["choices"][0]["finish_reason"]]
    # The last chunk carries usage and no choices; the text is the non-streamed answer's (greedy decoding).
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    usage = chunks[-1].usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (
        whole["usage"]["prompt_tokens"], whole["usage"]["completion_tokens"], whole["usage"]["total_tokens"])
    # the same prompt again: all of it but its last token (whose logits give the first token) came from the
    # prefix cache the non-streamed request left
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == whole["usage"]["prompt_tokens"] - 1
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
        whole["choices"][0]["message"]["content"]


@pytest.mark.parametrize("stream", [False, True])
def test_bad_requests_are_openai_errors(container: Container, stream: bool) -> None:
    def post(body: object) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.post(f"{container.url}/invocations", content=content, timeout=60,
                          headers={"Content-Type": "application/json"})

    assert post(b"{not json").status_code == 400
    refused = post({"messages": HELLO, "n": 2, "stream": stream})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "n"
    json_asked = post({"messages": HELLO, "response_format": {"type": "json_object"}, "stream": stream})
    assert json_asked.status_code == 400
    assert (json_asked.json()["error"]["param"], json_asked.json()["error"]["code"]) == \
        ("response_format", "unsupported_value")
    # A prompt longer than the context window is refused before any event is sent, even when streaming.
    too_long = post({"messages": [{"role": "user", "content": "hello " * 5000}], "stream": stream})
    assert too_long.status_code == 400 and too_long.headers["content-type"] == "application/json"
    assert too_long.json()["error"]["code"] == "context_length_exceeded"


@pytest.mark.parametrize("stream", [False, True])
def test_a_call_asking_for_a_model_session_gets_one(container: Container, stream: bool) -> None:
    from clawdbot.inference.model_session import parse_session

    response = httpx.post(f"{container.url}/invocations", timeout=60,
                          headers={"X-Amzn-SageMaker-Session-Id": "NEW_SESSION"},
                          json={"messages": HELLO, "max_tokens": 2, "stream": stream})
    assert response.status_code == 200
    session = parse_session(response.headers["x-amzn-sagemaker-new-session-id"])
    # THEN the session is routed for the default half hour from now (the id is the routing key; nothing is kept)
    assert session is not None and 1700 < (session.expires - datetime.now(UTC)).total_seconds() <= 1800
    # ... and a call that names it (or a session this instance never opened) is served like any other
    for named in (session.session_id, "ms-from-an-instance-replaced"):
        again = httpx.post(f"{container.url}/invocations", headers={"X-Amzn-SageMaker-Session-Id": named},
                           json={"messages": HELLO, "max_tokens": 2}, timeout=60)
        assert again.status_code == 200 and "x-amzn-sagemaker-new-session-id" not in again.headers


def test_a_session_is_opened_alone_only_when_asked_for(container: Container) -> None:
    url = f"{container.url}/invocations"
    opened = httpx.post(url, json={"open_session": True}, headers={"X-Amzn-SageMaker-Session-Id": "NEW_SESSION"},
                        timeout=60)
    assert opened.status_code == 200
    assert opened.json() == {"model_session": opened.headers["x-amzn-sagemaker-new-session-id"]}
    refused = httpx.post(url, json={"open_session": True}, timeout=60)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "open_session"
    assert "x-amzn-sagemaker-new-session-id" not in refused.headers


def test_serve_takes_the_session_lifetime(model_dir: Path, tmp_path: Path) -> None:
    from clawdbot.inference.model_session import parse_session

    started = start_container(model_dir, tmp_path / "serve.log", "--session-ttl-seconds", "120")
    try:
        opened = httpx.post(f"{started.url}/invocations", json={"open_session": True}, timeout=60,
                            headers={"X-Amzn-SageMaker-Session-Id": "NEW_SESSION"})
        session = parse_session(opened.headers["x-amzn-sagemaker-new-session-id"])
        assert session is not None and 100 < (session.expires - datetime.now(UTC)).total_seconds() <= 120
    finally:
        stop_container(started)
    bad = subprocess.run([sys.executable, str(SERVE), "--session-ttl-seconds", "0"], capture_output=True, text=True,
                         timeout=60, check=False)
    assert bad.returncode == 2 and "--session-ttl-seconds must be 1 or more" in bad.stderr
