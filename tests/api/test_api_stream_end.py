"""How a streamed turn ends, as the ASGI server is told: its last chunk, with ``[DONE]``, is the end of the response
(one write with the chunked terminator, not a second empty one after it), and the turn's clean-up (the record, an
idempotent answer's claim) still runs. In-process, on the shipped model, so every message sent is seen."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import pytest

from clawdbot.api.app import create_app
from clawdbot.config.settings import Settings
from clawdbot.inference.onnx import OnnxBackend

if TYPE_CHECKING:
    from pathlib import Path

    from fastapi import FastAPI


@pytest.fixture(scope="module")
def backend(model_dir: Path) -> OnnxBackend:
    return OnnxBackend(model_dir)


def _call(app: FastAPI, body: dict[str, Any], headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The ASGI messages the app sends for ``POST /v1/chat/completions`` with ``body``."""
    raw = json.dumps(body).encode()
    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
             "root_path": "", "query_string": b"", "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
             "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
                         (b"content-length", str(len(raw)).encode()),
                         *((k.encode(), v.encode()) for k, v in (headers or {}).items())]}
    sent: list[dict[str, Any]] = []

    async def run() -> None:
        delivered = asyncio.Event()

        async def receive() -> dict[str, Any]:
            if not delivered.is_set():
                delivered.set()
                return {"type": "http.request", "body": raw, "more_body": False}
            await asyncio.Event().wait()  # the client stays connected
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app(scope, receive, send)

    asyncio.run(run())
    return sent


def _events(messages: list[dict[str, Any]]) -> list[bytes]:
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return [e for e in body.split(b"\n\n") if e]


@pytest.mark.parametrize("idempotent", [False, True])
def test_the_last_chunk_ends_the_response_and_the_turn_is_still_recorded(
        backend: OnnxBackend, tmp_path: Path, idempotent: bool) -> None:
    app = create_app(Settings(data_dir=tmp_path), backend=backend)
    body = {"model": backend.model_id, "messages": [{"role": "user", "content": "Hello! How are you today?"}],
            "max_tokens": 24, "temperature": 0, "stream": True, "user": "end-of-stream"}
    headers = {"idempotency-key": "end-of-stream-1"} if idempotent else {}

    messages = _call(app, body, headers)

    assert messages[0]["type"] == "http.response.start" and messages[0]["status"] == 200
    bodies = [m for m in messages[1:] if m["type"] == "http.response.body"]
    # THEN exactly one message ends the response, the last, and it carries [DONE] (not an empty end after it)
    assert [m.get("more_body", False) for m in bodies] == [True] * (len(bodies) - 1) + [False]
    assert bodies[-1]["body"].endswith(b"data: [DONE]\n\n")
    events = _events(messages)
    assert events[-1] == b"data: [DONE]" and events.count(b"data: [DONE]") == 1
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text and chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    # AND the clean-up after the end ran: the turn is in the session, the streamed text as its reply
    session_id = dict(messages[0]["headers"])[b"x-session-id"].decode()
    entries = app.state.resources.store.read_recent(session_id, 10)
    assert [(e.role, e.content) for e in entries] == [("user", "Hello! How are you today?"), ("assistant", text)]
    if idempotent:  # the claimed answer was recorded: the same request is answered from it
        replayed = _call(app, body, headers)
        assert dict(replayed[0]["headers"]).get(b"idempotent-replayed") == b"true"
        replayed_bodies = [m for m in replayed[1:] if m["type"] == "http.response.body"]
        assert [m.get("more_body", False) for m in replayed_bodies][-1:] == [False]  # the replay ends the same way
        assert sum(not m.get("more_body", False) for m in replayed_bodies) == 1
        assert replayed_bodies[-1]["body"].endswith(b"data: [DONE]\n\n")
        replay_text = "".join(json.loads(e[6:])["choices"][0]["delta"].get("content", "")
                              for e in _events(replayed)[:-1] if json.loads(e[6:])["choices"])
        assert replay_text == text
