"""The chat API configured as on Lambda (``CLAWDBOT_INFERENCE=sagemaker``) talking to the real container.

The API keeps the session; each turn sends the whole context to the stateless endpoint, and A/B arms reach
SageMaker as ``TargetVariant``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from starlette.testclient import TestClient

from clawdbot.api.app import create_app
from clawdbot.config.settings import Settings
from tests.sagemaker.conftest import ENDPOINT

if TYPE_CHECKING:
    from pathlib import Path

    from tests.sagemaker.router import SageMakerRouter


def lambda_settings(bundle_dir: Path, data_dir: Path, **extra: object) -> Settings:
    return Settings(inference="sagemaker", sagemaker_endpoint=ENDPOINT, model_dir=bundle_dir, data_dir=data_dir,
                    session_store="sqlite", **extra)


def test_session_turns_send_the_whole_context(router: SageMakerRouter, bundle_dir: Path, tmp_path: Path) -> None:
    with TestClient(create_app(lambda_settings(bundle_dir, tmp_path))) as client:
        model = client.get("/v1/models").json()["data"][0]["id"]
        assert model == bundle_dir.name
        first = client.post("/v1/chat/completions", json={
            "model": model, "user": "alice", "max_tokens": 6, "temperature": 0,
            "messages": [{"role": "user", "content": "Hello there!"}]})
        assert first.status_code == 200, first.text
        reply = first.json()["choices"][0]["message"]["content"]
        # WHEN the conversation continues (streamed) with only the new message
        with client.stream("POST", "/v1/chat/completions", json={
                "model": model, "user": "alice", "max_tokens": 6, "temperature": 0, "stream": True,
                "messages": [{"role": "user", "content": "And then?"}]}) as second:
            events = [line.removeprefix("data: ") for line in second.iter_lines() if line.startswith("data: ")]
        assert second.status_code == 200 and events[-1] == "[DONE]"
        assert any(json.loads(e)["choices"] and json.loads(e)["choices"][0]["finish_reason"] for e in events[:-1])
    # THEN the endpoint got the stored history plus the new message: the container holds no state
    first_call, second_call = router.requests
    assert first_call.operation == "invocations" and second_call.operation == "invocations-response-stream"
    sent = [(m["role"], m["content"]) for m in second_call.body["messages"]]
    assert sent[-3:] == [("user", "Hello there!"), ("assistant", reply), ("user", "And then?")]


def test_ab_arms_reach_sagemaker_as_target_variants(router: SageMakerRouter, bundle_dir: Path,
                                                    tmp_path: Path) -> None:
    arms = [{"name": "a", "target_variant": "variant-a"}, {"name": "b", "target_variant": "variant-b"}]
    with TestClient(create_app(lambda_settings(bundle_dir, tmp_path, ab_variants=arms))) as client:
        for arm in ("b", "a"):
            answer = client.post("/v1/chat/completions", headers={"x-clawdbot-variant": arm}, json={
                "model": bundle_dir.name, "max_tokens": 2, "messages": [{"role": "user", "content": "Hi"}]})
            assert answer.status_code == 200, answer.text
    assert [r.headers.get("x-amzn-sagemaker-target-variant") for r in router.requests] == ["variant-b",
                                                                                           "variant-a"]


def test_a_sessions_turns_run_in_the_model_session_its_last_reply_recorded(router: SageMakerRouter,
                                                                          bundle_dir: Path, tmp_path: Path) -> None:
    with TestClient(create_app(lambda_settings(bundle_dir, tmp_path))) as client:
        def turn(content: str, **extra: object) -> str | None:
            answer = client.post("/v1/chat/completions", json={
                "model": bundle_dir.name, "max_tokens": 4, "messages": [{"role": "user", "content": content}],
                **extra})
            assert answer.status_code == 200, answer.text
            return answer.headers.get("x-session-id")

        def replies(session_id: str) -> list[dict[str, object]]:
            messages = client.get(f"/v1/sessions/{session_id}").json()["messages"]["data"]
            return [m["metadata"] for m in messages if m["role"] == "assistant"]

        session_id = turn("Hello there! Tell me about the mountains, the rivers, the forests and the sea.", user="bob")
        assert session_id is not None
        recorded = replies(session_id)[-1]["model_session"]
        turn("And then?", user="bob")
        assert turn("A stateless hello") is None
        stored = replies(session_id)
    # THEN the first turn asked for a session and recorded the one it got with its reply; the next turn named it
    # (and ran on the instance behind it, reusing the first turn's cache), recording it again; the stateless turn
    # named none
    assert isinstance(recorded, str)
    sent = [r.headers.get("x-amzn-sagemaker-session-id") for r in router.requests]
    assert sent == ["NEW_SESSION", recorded.split(";")[0], None]
    assert stored[-1]["model_session"] == recorded
    assert isinstance(stored[-1]["cached_tokens"], int) and stored[-1]["cached_tokens"] > 0


def test_a_turn_forced_onto_another_arm_opens_its_own_model_session(router: SageMakerRouter, bundle_dir: Path,
                                                                   tmp_path: Path) -> None:
    arms = [{"name": "a", "target_variant": "variant-a"}, {"name": "b", "target_variant": "variant-b"}]
    with TestClient(create_app(lambda_settings(bundle_dir, tmp_path, ab_variants=arms))) as client:
        for arm in ("a", "a", "b"):
            answer = client.post("/v1/chat/completions", headers={"x-clawdbot-variant": arm}, json={
                "model": bundle_dir.name, "user": "carol", "max_tokens": 2,
                "messages": [{"role": "user", "content": "Hi"}]})
            assert answer.status_code == 200, answer.text
    # THEN arm a's second turn ran in the session its first opened; the turn on arm b (other instances) opened one
    sent = [(r.headers.get("x-amzn-sagemaker-target-variant"), r.headers.get("x-amzn-sagemaker-session-id"))
            for r in router.requests]
    assert sent[0] == ("variant-a", "NEW_SESSION") and sent[2] == ("variant-b", "NEW_SESSION")
    assert sent[1][0] == "variant-a" and sent[1][1] not in (None, "NEW_SESSION")


def test_n_choices_are_one_endpoint_call_each(router: SageMakerRouter, bundle_dir: Path, tmp_path: Path) -> None:
    with TestClient(create_app(lambda_settings(bundle_dir, tmp_path))) as client:
        answer = client.post("/v1/chat/completions", json={
            "model": bundle_dir.name, "max_tokens": 5, "temperature": 1.0, "seed": 11, "n": 3,
            "messages": [{"role": "user", "content": "Tell me something."}]})
    assert answer.status_code == 200, answer.text
    choices = answer.json()["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2]
    # THEN each choice was its own call to the stateless container, with the seed moved on by its index
    assert [(r.operation, r.body.get("seed"), r.body.get("n")) for r in router.requests] == [
        ("invocations", 11, None), ("invocations", 12, None), ("invocations", 13, None)]
