"""A/B testing end to end: sticky assignment across turns and processes, the header override, feedback, and the
report's numbers recomputed independently (NumPy percentiles, SciPy's t distribution and Welch test)."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import TYPE_CHECKING

import numpy as np
import pytest
from scipy import stats as scipy_stats

from tests.traffic.conftest import run_cli

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    import httpx

    from tests.traffic.conftest import Server

VARIANTS = [{"name": "control", "weight": 1}, {"name": "treatment", "weight": 1, "temperature": 0.0}]


def expected_variant(session_id: str, experiment: str = "default") -> str:
    """The assignment rule, written out again: SHA-256 of "<experiment>:<id>", 10,000 buckets, equal weights."""
    bucket = int.from_bytes(hashlib.sha256(f"{experiment}:{session_id}".encode()).digest()[:8], "big") % 10_000
    return "control" if bucket / 10_000 * 2 < 1 else "treatment"


def _turn(client: httpx.Client, model: str, session_id: str, text: str = "Hi!",
          headers: dict[str, str] | None = None) -> httpx.Response:
    response = client.post("/v1/chat/completions", headers={"x-session-id": session_id, **(headers or {})},
                           json={"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 2})
    assert response.status_code == 200, response.text
    return response


def test_assignment_is_sticky_across_turns_and_processes(serve: Callable[..., Server], server_env: dict[str, str],
                                                         redis_server: str) -> None:
    # GIVEN two server processes sharing Redis sessions and the same two-arm experiment
    env = {**server_env, "CLAWDBOT_SESSION_STORE": "redis", "CLAWDBOT_REDIS_URL": redis_server,
           "CLAWDBOT_AB_VARIANTS": json.dumps(VARIANTS)}
    clients = [serve(env).client(), serve(env).client()]
    model = clients[0].get("/v1/models").json()["data"][0]["id"]
    # (ids the hash rule puts 4 in each arm: 8 random ones all fall in one arm one time in 128; fresh per run, as
    # the Redis server outlives the test)
    sessions = [clients[0].post("/v1/sessions", json={"id": session_id}).json()["id"]
                for session_id in _balanced_ids(4, prefix=f"sess-ab-{uuid.uuid4().hex[:12]}")]

    # WHEN each session's turns alternate between the processes
    for session_id in sessions:
        served = [_turn(clients[i % 2], model, session_id, f"turn {i}").headers["x-clawdbot-variant"]
                  for i in range(3)]
        # THEN every turn is served by the variant the hash rule gives the session
        assert served == [expected_variant(session_id)] * 3
        stored = clients[1].get(f"/v1/sessions/{session_id}").json()
        assert stored["metadata"]["variant"] == expected_variant(session_id)
        replies = [m for m in stored["messages"]["data"] if m["role"] == "assistant"]
        assert [m["metadata"]["variant"] for m in replies] == served
    assert {expected_variant(s) for s in sessions} == {"control", "treatment"}  # both arms were exercised


def test_header_override_forces_a_variant_without_moving_the_session(serve: Callable[..., Server],
                                                                    server_env: dict[str, str]) -> None:
    server = serve({**server_env, "CLAWDBOT_AB_VARIANTS": json.dumps(VARIANTS)})
    client = server.client()
    model = client.get("/v1/models").json()["data"][0]["id"]
    session_id = client.post("/v1/sessions", json={}).json()["id"]
    own = expected_variant(session_id)
    other = "treatment" if own == "control" else "control"
    assert _turn(client, model, session_id).headers["x-clawdbot-variant"] == own
    forced = _turn(client, model, session_id, headers={"x-clawdbot-variant": other})
    assert forced.headers["x-clawdbot-variant"] == other
    assert _turn(client, model, session_id).headers["x-clawdbot-variant"] == own
    stored = client.get(f"/v1/sessions/{session_id}").json()
    assert stored["metadata"]["variant"] == own
    assert [m["metadata"]["variant"] for m in stored["messages"]["data"] if m["role"] == "assistant"] == \
        [own, other, own]
    unknown = client.post("/v1/chat/completions", headers={"x-clawdbot-variant": "nope"},
                          json={"model": model, "messages": [{"role": "user", "content": "x"}]})
    assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "unknown_variant"


def test_feedback_validates_and_ends_the_conversation(serve: Callable[..., Server],
                                                      server_env: dict[str, str]) -> None:
    client = serve(server_env).client()
    model = client.get("/v1/models").json()["data"][0]["id"]
    session_id = client.post("/v1/sessions", json={}).json()["id"]
    turn_id = _turn(client, model, session_id).json()["id"]
    url = f"/v1/sessions/{session_id}/feedback"
    for bad in ({"score": 0}, {"score": 6}, {"score": "great"}, {}, {"score": 3, "extra": 1}):
        response = client.post(url, json=bad)
        assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"
    assert client.post("/v1/sessions/sess_missing/feedback", json={"score": 3}).status_code == 404

    on_turn = client.post(url, json={"score": 4, "turn_id": turn_id, "comment": "good answer"})
    assert on_turn.status_code == 201 and on_turn.json()["completed"] is False
    ended = client.post(url, json={"score": 5})
    assert ended.status_code == 201 and ended.json()["completed"] is True
    metadata = client.get(f"/v1/sessions/{session_id}").json()["metadata"]
    assert metadata[f"feedback:{turn_id}"]["score"] == 4 and metadata[f"feedback:{turn_id}"]["comment"] == "good answer"
    assert metadata["feedback:session"]["score"] == 5 and "completed_at" in metadata


def _independent_report(sessions: list[dict], idle_seconds: float, now: float) -> dict[str, dict]:
    """The report recomputed from the API's session objects with NumPy and SciPy."""
    out: dict[str, dict] = {}
    for name in ("control", "treatment"):
        mine = [s for s in sessions if s["metadata"]["variant"] == name]
        replies = [m["metadata"] for s in sessions for m in s["messages"]["data"]
                   if m["role"] == "assistant" and m["metadata"]["variant"] == name]
        latencies = np.array([r["latency_ms"] for r in replies])
        scores = [np.mean([v["score"] for k, v in s["metadata"].items() if k.startswith("feedback:")])
                  for s in mine if any(k.startswith("feedback:") for k in s["metadata"])]
        sem = scipy_stats.sem(scores)
        half = scipy_stats.t.ppf(0.975, len(scores) - 1) * sem
        out[name] = {
            "turns": len(replies), "conversations": len(mine),
            "completed": sum(("completed_at" in s["metadata"] or now - s["updated_at"] > idle_seconds)
                             for s in mine),
            "p50_latency_ms": float(np.percentile(latencies, 50)),
            "p95_latency_ms": float(np.percentile(latencies, 95)),
            "tokens": sum(r["prompt_tokens"] + r["completion_tokens"] for r in replies),
            "rated_conversations": len(scores), "satisfaction_mean": float(np.mean(scores)),
            "satisfaction_ci_low": float(np.mean(scores) - half), "satisfaction_ci_high": float(np.mean(scores) + half),
            "scores": scores,
        }
    welch = scipy_stats.ttest_ind(out["treatment"]["scores"], out["control"]["scores"], equal_var=False)
    out["treatment"].update(t=float(welch.statistic), p_value=float(welch.pvalue), df=float(welch.df))
    return out


def test_report_numbers_match_an_independent_computation(serve: Callable[..., Server], server_env: dict[str, str],
                                                         tmp_path: Path) -> None:
    # GIVEN an experiment with 10 conversations per arm, 1-3 turns each, and feedback that favours the control
    env = {**server_env, "CLAWDBOT_AB_VARIANTS": json.dumps(VARIANTS)}
    client = serve(env).client()
    model = client.get("/v1/models").json()["data"][0]["id"]
    happy, unhappy = iter([5, 4, 5, 5, 4, 5, 3, 5, 4, 5] * 3), iter([2, 3, 1, 2, 4, 2, 3, 1, 2, 2] * 3)
    for i, session_id in enumerate(_balanced_ids(10)):
        assert client.post("/v1/sessions", json={"id": session_id}).status_code == 201
        turn_ids = [_turn(client, model, session_id, f"question {j}").json()["id"] for j in range(1 + i % 3)]
        scores = happy if expected_variant(session_id) == "control" else unhappy
        if i % 4 == 0:  # some rate a turn as well (the conversation's satisfaction is the mean of its scores)
            client.post(f"/v1/sessions/{session_id}/feedback", json={"score": next(scores), "turn_id": turn_ids[0]})
        if i % 5 != 4:  # most end the conversation with a score; every fifth just leaves
            client.post(f"/v1/sessions/{session_id}/feedback", json={"score": next(scores)})
    ids = [row["id"] for row in _all_sessions(server_env)]
    sessions = [client.get(f"/v1/sessions/{sid}").json() for sid in ids]

    # WHEN the report runs on the local store, and on the data exported from it
    report = json.loads(run_cli(env, "ab", "report", "--json").stdout)
    export = tmp_path / "export.jsonl"
    run_cli(env, "ab", "export", "--out", str(export))
    from_export = json.loads(run_cli(env, "ab", "report", "--json", "--input", str(export)).stdout)

    # THEN every number agrees with NumPy/SciPy on the transcripts read back through the API
    assert from_export["variants"] == report["variants"]
    assert report["control"] == "control" and "Welch" in report["test"]
    import time

    expected = _independent_report(sessions, report["idle_seconds"], time.time())
    rows = {row["variant"]: row for row in report["variants"]}
    assert list(rows) == ["control", "treatment"]
    for name, want in expected.items():
        for field_name in ("turns", "conversations", "completed", "tokens", "rated_conversations"):
            assert rows[name][field_name] == want[field_name], (name, field_name)
        for field_name in ("p50_latency_ms", "p95_latency_ms", "satisfaction_mean", "satisfaction_ci_low",
                           "satisfaction_ci_high"):
            assert rows[name][field_name] == pytest.approx(want[field_name], rel=1e-9), (name, field_name)
    assert rows["treatment"]["t"] == pytest.approx(expected["treatment"]["t"], rel=1e-9)
    assert rows["treatment"]["df"] == pytest.approx(expected["treatment"]["df"], rel=1e-9)
    assert rows["treatment"]["p_value"] == pytest.approx(expected["treatment"]["p_value"], rel=1e-6)
    assert rows["treatment"]["significant"] is (expected["treatment"]["p_value"] < 0.05)
    assert rows["treatment"]["significant"] is True  # the feedback was built to differ clearly
    assert rows["control"]["p_value"] is None

    # AND the idle rule: with no idle allowance every conversation with a reply is completed
    idle = json.loads(run_cli(env, "ab", "report", "--json", "--idle-seconds", "0").stdout)
    assert sum(r["completed"] for r in idle["variants"]) == 20
    text = run_cli(env, "ab", "report").stdout
    assert "Welch" in text and "control" in text and "treatment" in text


def _balanced_ids(per_arm: int, prefix: str = "ab-report") -> list[str]:
    """Session ids (deterministic for a prefix, interleaved) that the hash rule puts ``per_arm`` in each arm."""
    arms: dict[str, list[str]] = {"control": [], "treatment": []}
    n = 0
    while min(len(ids) for ids in arms.values()) < per_arm:
        candidate = f"{prefix}-{n}"
        n += 1
        if len(arms[expected_variant(candidate)]) < per_arm:
            arms[expected_variant(candidate)].append(candidate)
    return [sid for pair in zip(arms["control"], arms["treatment"], strict=True) for sid in pair]


def _all_sessions(env: dict[str, str]) -> list[dict]:
    """Session ids from an export (the API has no listing route)."""
    return [json.loads(line) for line in run_cli(env, "ab", "export").stdout.splitlines()]


def test_a_local_variant_runs_its_own_model_and_defaults(model_dir: Path, tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    from clawdbot.api.app import create_app
    from clawdbot.config.settings import Settings
    from clawdbot.inference.types import ChatMessage

    prompt = "You are a terse assistant."
    arms = [{"name": "a"}, {"name": "b", "model_dir": str(model_dir), "system_prompt": prompt, "temperature": 0}]
    app = create_app(Settings(data_dir=tmp_path, model_dir=model_dir, ab_variants=arms))
    router = app.state.resources.chat.variants
    default_backend = app.state.resources.backend
    assert router.get("a").backend is default_backend
    assert router.get("b").backend is not default_backend  # loaded on its own at start-up
    question = [{"role": "user", "content": "Hello!"}]
    with TestClient(app) as client:
        model = client.get("/v1/models").json()["data"][0]["id"]
        answers = {arm: client.post("/v1/chat/completions", headers={"x-clawdbot-variant": arm},
                                    json={"model": model, "messages": question, "max_tokens": 2})
                   for arm in ("a", "b")}
    assert {arm: r.headers["x-clawdbot-variant"] for arm, r in answers.items()} == {"a": "a", "b": "b"}
    # variant b added its own system prompt to the context the model was given; a did not
    usage = {arm: r.json()["usage"]["prompt_tokens"] for arm, r in answers.items()}
    assert usage["a"] == default_backend.count_prompt_tokens([ChatMessage("user", "Hello!")])
    assert usage["b"] == default_backend.count_prompt_tokens([ChatMessage("system", prompt),
                                                              ChatMessage("user", "Hello!")])
