"""A client that hangs up on a non-streamed turn stops the model (``clawdbot.inference.cancellation``): the turn
ends at its next token with a 499 in the metrics, nothing of it is stored, and its generation slot is free again.
Against the real server (``clawdbot serve``), by a raw socket and by the openai SDK's own timeout."""

from __future__ import annotations

import json
import socket
import time
from typing import TYPE_CHECKING

import openai
import pytest

from tests.fixtures.probes import metric_samples, no_end_bias

if TYPE_CHECKING:
    import httpx

    from tests.api.conftest import LiveServer

GONE = frozenset({("route", "/v1/chat/completions"), ("status", "499")})
TURNS = frozenset({("variant", "default")})


def samples(http: httpx.Client) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return metric_samples(http.get("/metrics").text)


def gone_count(http: httpx.Client) -> float:
    return samples(http).get(("clawdbot_requests_total", GONE), 0.0)


def wait_until_gone_counted(http: httpx.Client, before: float) -> None:
    deadline = time.monotonic() + 60
    while gone_count(http) <= before:
        assert time.monotonic() < deadline, "the server never answered the abandoned turn with a 499"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def endless(model_dir) -> dict[str, object]:
    """Sampling that never ends a reply early: the end-of-sequence tokens banned, the completion as long as fits."""
    return {"max_tokens": 400, "temperature": 1.0, "logit_bias": no_end_bias(model_dir)}


def test_a_session_turn_whose_client_hangs_up_is_not_stored(live_server: LiveServer, http: httpx.Client,
                                                            model_id: str, endless: dict[str, object]) -> None:
    # GIVEN a stored session, and the count of abandoned turns so far
    session_id = http.post("/v1/sessions", json={}).json()["id"]
    before = gone_count(http)
    turns_before = samples(http).get(("clawdbot_turns_total", TURNS), 0.0)
    # WHEN a client sends a long non-streamed turn on it and hangs up without reading the answer
    body = json.dumps({"model": model_id, "messages": [{"role": "user", "content": "Tell me a long story."}],
                       **endless}).encode()
    host, port = live_server.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: %b\r\ncontent-type: application/json\r\n"
                     b"x-session-id: %b\r\ncontent-length: %d\r\n\r\n%b"
                     % (host.encode(), session_id.encode(), len(body), body))
    # THEN the server ends the turn with a 499 (it would have been a 200 had the model run to its end)
    wait_until_gone_counted(http, before)
    # and stored nothing of it, nor counted it as a turn
    assert http.get(f"/v1/sessions/{session_id}").json()["messages"]["data"] == []
    assert samples(http).get(("clawdbot_turns_total", TURNS), 0.0) == turns_before
    # and the session goes on: the next turn is stored alone
    reply = http.post("/v1/chat/completions", headers={"x-session-id": session_id},
                      json={"model": model_id, "messages": [{"role": "user", "content": "Hi!"}], "max_tokens": 8})
    assert reply.status_code == 200
    stored = http.get(f"/v1/sessions/{session_id}").json()["messages"]["data"]
    assert [(m["role"], m["content"]) for m in stored] == [
        ("user", "Hi!"), ("assistant", reply.json()["choices"][0]["message"]["content"])]


def test_the_sdk_timing_out_stops_the_model(live_server: LiveServer, http: httpx.Client, model_id: str,
                                            endless: dict[str, object]) -> None:
    # GIVEN an SDK client that gives up after 0.2 s, and a turn that takes far longer: 8 choices of 400 tokens
    impatient = openai.OpenAI(base_url=live_server.v1, api_key="unused-while-open", timeout=0.2, max_retries=0)
    before = gone_count(http)
    # WHEN it times out
    with pytest.raises(openai.APITimeoutError):
        impatient.chat.completions.create(model=model_id, n=8, messages=[{"role": "user", "content": "Go on."}],
                                          **endless)  # type: ignore[arg-type]
    # THEN the server stops the model and says so with a 499, rather than finish 3,200 tokens for nobody
    wait_until_gone_counted(http, before)
    # and serves the next turn as usual
    answer = impatient.with_options(timeout=60).chat.completions.create(
        model=model_id, messages=[{"role": "user", "content": "Hi!"}], max_tokens=4)
    assert answer.choices[0].finish_reason in {"stop", "length"}


def test_a_stream_abandoned_mid_way_is_counted_as_a_499(live_server: LiveServer, http: httpx.Client, model_id: str,
                                                         endless: dict[str, object]) -> None:
    # GIVEN a long streamed turn on a stored session, whose client reads its first text and hangs up
    session_id = http.post("/v1/sessions", json={}).json()["id"]
    before = gone_count(http)
    client = openai.OpenAI(base_url=live_server.v1, api_key="unused-while-open", max_retries=0)
    stream = client.chat.completions.create(model=model_id, messages=[{"role": "user", "content": "A story?"}],
                                            stream=True, extra_headers={"x-session-id": session_id},
                                            **endless)  # type: ignore[arg-type]
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            break
    stream.close()
    # THEN the request is counted as one its client closed (it began as a 200), and the turn stored nothing
    wait_until_gone_counted(http, before)
    assert http.get(f"/v1/sessions/{session_id}").json()["messages"]["data"] == []
