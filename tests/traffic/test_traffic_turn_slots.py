"""The local server's chat-turn slots (``Resources.turns``, ``clawdbot.traffic.concurrency``): with the model in
this process, chat turns are admitted as the engine can run them and the rest wait in arrival order, then 503;
other routes are not held behind them, and a request whose body has not arrived holds no slot.

The app is the real one on a real uvicorn server, the shipped model behind a gate the test opens: a turn holds its
slot for as long as the test needs, without timing."""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from clawdbot.inference.base import InferenceBackend
from tests.traffic.conftest import gauge, wait_for

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from pathlib import Path

    from clawdbot.inference.onnx import OnnxBackend
    from clawdbot.inference.token_ids import TokenIdStream
    from clawdbot.inference.types import ChatMessage, Completion, GenerationParams, StreamDelta

TURN = {"messages": [{"role": "user", "content": "Hello there"}], "max_tokens": 4}


class GatedBackend(InferenceBackend):
    """The shipped model, with one generation slot, whose turns start generating only once ``gate`` is open;
    ``entered`` counts the turns that reached the model."""

    def __init__(self, inner: OnnxBackend) -> None:
        self.inner = inner
        self.gate = threading.Event()
        self.entered = 0
        self._lock = threading.Lock()

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    @property
    def context_length(self) -> int:
        return self.inner.context_length

    @property
    def generation_slots(self) -> int:
        return 1

    def count_prompt_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return self.inner.count_prompt_tokens(messages)

    def _wait(self) -> None:
        with self._lock:
            self.entered += 1
        assert self.gate.wait(60), "the test never opened the gate"

    def stream(self, messages: Sequence[ChatMessage], params: GenerationParams) -> Iterator[StreamDelta]:
        self._wait()
        return self.inner.stream(messages, params)

    def stream_ids(self, messages: Sequence[ChatMessage], params: GenerationParams) -> TokenIdStream | None:
        self._wait()
        return self.inner.stream_ids(messages, params)

    def generate(self, messages: Sequence[ChatMessage], params: GenerationParams) -> Completion:
        self._wait()
        return self.inner.generate(messages, params)


@pytest.fixture(scope="module")
def shipped() -> OnnxBackend:
    from clawdbot.config.settings import DEFAULT_MODEL_DIR
    from clawdbot.inference.onnx import OnnxBackend

    return OnnxBackend(DEFAULT_MODEL_DIR)


@pytest.fixture
def gated_server(shipped: OnnxBackend, tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., tuple[str, GatedBackend]]]:
    """Start the app (``create_app`` with the gated model, the given ``CLAWDBOT_*`` settings) on uvicorn."""
    import uvicorn

    from clawdbot.api.app import create_app
    from clawdbot.config.settings import Settings

    servers: list[tuple[uvicorn.Server, threading.Thread, GatedBackend]] = []

    def start(**settings: Any) -> tuple[str, GatedBackend]:
        for name in ("AWS_LAMBDA_FUNCTION_NAME", "CLAWDBOT_API_KEYS_REQUIRED"):
            monkeypatch.delenv(name, raising=False)
        backend = GatedBackend(shipped)
        app = create_app(Settings(data_dir=tmp_path / f"data-{len(servers)}", **settings), backend=backend)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", ws="none",
                                               lifespan="off"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.01)
        servers.append((server, thread, backend))
        return f"http://127.0.0.1:{port}", backend

    yield start
    for server, thread, backend in servers:
        backend.gate.set()
        server.should_exit = True
        thread.join(30)


def _metric(base: str, name: str) -> float:
    with httpx.Client(base_url=base) as client:
        return gauge(client, name)


def _turn(base: str, model: str, **extra: Any) -> httpx.Response:
    return httpx.post(f"{base}/v1/chat/completions", json={"model": model, **TURN, **extra}, timeout=60)


def test_a_turn_past_the_slots_waits_in_line_while_other_routes_answer(
        gated_server: Callable[..., tuple[str, GatedBackend]]) -> None:
    base, backend = gated_server()
    model = backend.model_id
    with ThreadPoolExecutor(2) as pool:
        # GIVEN a streamed turn that holds the only slot (it reached the model, which waits for the gate)
        first = pool.submit(_turn, base, model, stream=True)
        wait_for(lambda: backend.entered == 1, "the first turn reaches the model")
        assert _metric(base, "clawdbot_turns_in_flight") == 1
        # WHEN a second turn comes
        second = pool.submit(_turn, base, model)
        wait_for(lambda: _metric(base, "clawdbot_turns_queued") == 1, "the second turn waits for a slot")
        # THEN it waits before any of its work (it has not reached the model), while other routes answer at once
        assert backend.entered == 1
        assert httpx.get(f"{base}/v1/models").status_code == 200
        assert httpx.get(f"{base}/v1/sessions/nope").status_code == 404
        # WHEN the model runs
        backend.gate.set()
        # THEN both turns are answered, the waiting one once the first gave its slot back
        streamed, plain = first.result(60), second.result(60)
    assert streamed.status_code == 200 and streamed.text.endswith("data: [DONE]\n\n")
    assert plain.status_code == 200 and plain.json()["choices"][0]["message"]["content"] is not None
    assert backend.entered == 2
    wait_for(lambda: _metric(base, "clawdbot_turns_in_flight") == 0, "the slot is free again")


def test_a_turn_past_the_slots_and_the_queue_is_a_503_that_the_sdk_can_retry(
        gated_server: Callable[..., tuple[str, GatedBackend]]) -> None:
    import openai

    base, backend = gated_server(max_queue=0)
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(_turn, base, backend.model_id)
        wait_for(lambda: backend.entered == 1, "the first turn reaches the model")
        # WHEN a second turn comes with no room to wait
        refused = _turn(base, backend.model_id)
        # THEN it is refused as OpenAI refuses an overloaded server, and never reached the model
        assert refused.status_code == 503
        assert refused.headers["retry-after"].isdigit()
        error = refused.json()["error"]
        assert error["code"] == "server_overloaded" and "1 chat turns in flight" in error["message"]
        with (openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0) as sdk,
              pytest.raises(openai.InternalServerError) as raised):
            sdk.chat.completions.create(model=backend.model_id, **TURN)  # type: ignore[arg-type]
        assert raised.value.status_code == 503
        assert backend.entered == 1
        backend.gate.set()
        assert first.result(60).status_code == 200


def test_a_request_whose_body_has_not_arrived_holds_no_slot(
        gated_server: Callable[..., tuple[str, GatedBackend]]) -> None:
    base, backend = gated_server()
    host, port = base.removeprefix("http://").split(":")
    # GIVEN a chat request whose headers promise a body that does not come
    stalled = socket.create_connection((host, int(port)))
    try:
        body = json.dumps({"model": backend.model_id, **TURN}).encode()
        stalled.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                        b"content-length: %d\r\n\r\n" % len(body) + body[:10])
        time.sleep(0.2)
        # THEN the only slot is still free: a turn runs through
        assert _metric(base, "clawdbot_turns_in_flight") == 0
        backend.gate.set()
        assert _turn(base, backend.model_id).status_code == 200
    finally:
        stalled.close()
