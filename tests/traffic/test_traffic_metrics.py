"""The three levels of metrics: Prometheus ``/metrics`` on the real server, Powertools EMF (parsed and checked
against the EMF specification) and Logger lines through the Lambda handler path, and the latency guard's
streak shared by several instances through Redis and DynamoDB Local."""

from __future__ import annotations

import json
import sys
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from clawdbot.metrics.catalogue import CATALOGUE, NAMESPACE
from clawdbot.metrics.latency_guard import (
    DynamoDBStreakCounter,
    LatencyGuard,
    MemoryStreakCounter,
    RedisStreakCounter,
    StreakCounter,
)
from tests.fixtures.event_loops import close_main_thread_loop
from tests.fixtures.probes import metric_samples

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from tests.traffic.conftest import Server

#: CloudWatch's units (the EMF specification's enumeration).
EMF_UNITS = {"Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes", "Gigabytes",
             "Terabytes", "Bits", "Kilobits", "Megabits", "Gigabits", "Terabits", "Percent", "Count",
             "Bytes/Second", "Kilobytes/Second", "Megabytes/Second", "Gigabytes/Second", "Terabytes/Second",
             "Bits/Second", "Kilobits/Second", "Megabits/Second", "Gigabits/Second", "Terabits/Second",
             "Count/Second", "None"}


def test_prometheus_endpoint_serves_the_catalogue(serve: Callable[..., Server], server_env: dict[str, str]) -> None:
    client = serve(server_env).client()
    model = client.get("/v1/models").json()["data"][0]["id"]
    session_id = client.post("/v1/sessions", json={}).json()["id"]
    body = {"model": model, "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 4, "stream": True,
            "stream_options": {"include_usage": True}}
    events = [line for line in client.post("/v1/chat/completions", json=body,
                                           headers={"x-session-id": session_id}).text.splitlines()
              if line.startswith("data: {")]
    usage = json.loads(events[-1].removeprefix("data: "))["usage"]
    assert client.post(f"/v1/sessions/{session_id}/feedback", json={"score": 4}).status_code == 201
    assert client.get("/v1/nope").status_code == 404

    scrape = client.get("/metrics")
    assert scrape.status_code == 200 and scrape.headers["content-type"].startswith("text/plain")
    samples = metric_samples(scrape.text)
    variant = frozenset({("variant", "default")})
    assert samples[("clawdbot_turns_total", variant)] == 1
    assert samples[("clawdbot_tokens_total", variant)] == usage["total_tokens"]
    assert samples[("clawdbot_cached_prompt_tokens_total", variant)] == usage["prompt_tokens_details"]["cached_tokens"]
    assert samples[("clawdbot_time_to_first_token_seconds_count", variant)] == 1
    assert samples[("clawdbot_tokens_per_second_count", variant)] == 1
    assert samples[("clawdbot_satisfaction_score_sum", variant)] == 4
    assert samples[("clawdbot_conversations_completed_total", variant)] == 1
    chat = frozenset({("route", "/v1/chat/completions"), ("status", "200")})
    assert samples[("clawdbot_requests_total", chat)] == 1
    assert samples[("clawdbot_request_latency_seconds_count", chat)] == 1
    assert samples[("clawdbot_errors_total", frozenset({("status", "404")}))] == 1
    assert samples[("clawdbot_model_load_seconds", frozenset())] > 0
    assert samples[("clawdbot_process_memory_bytes", frozenset())] > 10_000_000
    assert samples[("clawdbot_process_cpu_seconds", frozenset())] > 0
    assert samples[("clawdbot_requests_in_flight", frozenset())] == 0  # the scrape itself bypasses the cap
    # one catalogue, two names: every Prometheus family says which CloudWatch metric it is
    for definition in CATALOGUE.values():
        if definition.name != "GpuUtilization":  # only where a GPU is present
            assert f"{definition.prometheus_name}" in scrape.text
            assert f"{definition.name}: " in scrape.text


def _check_emf(document: dict[str, Any]) -> None:
    """Structural rules of the CloudWatch Embedded Metric Format specification."""
    meta = document["_aws"]
    assert isinstance(meta["Timestamp"], int) and meta["Timestamp"] > 1_600_000_000_000
    [directive] = meta["CloudWatchMetrics"]
    assert directive["Namespace"] == NAMESPACE
    assert 1 <= len(directive["Metrics"]) <= 100
    for dimension_set in directive["Dimensions"]:
        assert len(dimension_set) <= 30
        for name in dimension_set:
            assert isinstance(document[name], str) and document[name]
    for metric in directive["Metrics"]:
        assert set(metric) <= {"Name", "Unit", "StorageResolution"}
        assert metric["Unit"] in EMF_UNITS
        assert metric.get("StorageResolution", 60) in (1, 60)
        value = document[metric["Name"]]
        values = value if isinstance(value, list) else [value]
        assert values and all(isinstance(v, int | float) for v in values)
        assert metric["Unit"] == CATALOGUE[metric["Name"]].unit


@pytest.fixture
def fresh_clawdbot_logger(monkeypatch: pytest.MonkeyPatch) -> None:
    """Powertools configures the ``clawdbot`` logger once per process; undo that around this test."""
    import copy
    import logging

    log = logging.getLogger("clawdbot")
    for attr in ("handlers", "filters", "propagate", "level", "disabled"):
        monkeypatch.setattr(log, attr, copy.copy(getattr(log, attr)))
    log.handlers.clear()
    # the markers Powertools leaves on a logger it configured (restored, or removed, afterwards)
    for attr in ("init", "powertools_handler", "powertools_buffer_config", "powertools_buffer_cache"):
        monkeypatch.setattr(log, attr, None, raising=False)
    for handler in logging.root.handlers:  # Powertools adds a duplicate-suppressing filter to these
        monkeypatch.setattr(handler, "filters", copy.copy(handler.filters))


def test_emf_documents_and_log_lines_from_the_lambda_path(model_dir: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str],
                                                          fresh_clawdbot_logger: None) -> None:
    # GIVEN the chat API as the Lambda handler runs it (Mangum + instrument) with EMF metrics, a latency threshold
    # every turn exceeds and a streak of two; stdout is what Lambda ships to CloudWatch Logs
    from mangum import Mangum

    from clawdbot.api.app import create_app
    from clawdbot.config.settings import Settings
    from clawdbot.metrics.observability import instrument
    from clawdbot.testing.context import LambdaContext
    from clawdbot.testing.events import load_event

    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "clawdbot")  # must not leak into the metrics' dimensions
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")  # no X-Ray daemon here
    settings = Settings(data_dir=tmp_path, model_dir=model_dir, metrics="emf", latency_threshold_ms=0.001,
                        latency_breach_turns=2)
    app = create_app(settings)
    handler = instrument(Mangum(app, lifespan="off"), stream=sys.stdout)
    model = app.state.resources.backend.model_id
    session_id = "sess-emf-" + uuid.uuid4().hex[:8]
    app.state.resources.store.create(session_id)
    usages = []
    for i in range(3):
        event = load_event("chat-completion", headers={"x-session-id": session_id, "x-request-id": f"req-{i}"},
                           body={"model": model, "messages": [{"role": "user", "content": f"Hi {i}"}],
                                 "max_tokens": 3})
        response = handler(event, LambdaContext())
        assert response["statusCode"] == 200, response["body"]
        usages.append(json.loads(response["body"])["usage"]["total_tokens"])
    close_main_thread_loop()  # Mangum's (tests/fixtures/event_loops.py)

    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    documents = [d for d in lines if "_aws" in d]
    logs = [d for d in lines if "_aws" not in d]
    for document in documents:
        _check_emf(document)

    turns = [d for d in documents if "Turns" in d]
    assert len(turns) == 3
    for document, tokens in zip(turns, usages, strict=True):
        assert document["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["variant"]]  # no implicit "service"
        assert document["variant"] == "default"
        assert document["Turns"] == [1.0] and document["Tokens"] == [float(tokens)]
        assert document["TurnLatency"][0] > 0 and document["TokensPerSecond"][0] > 0
    # the latency guard: every turn is "slow"; the second completes a streak of two and the third extends it
    assert ["LatencyBreach" in d for d in turns] == [False, True, True]
    breach = [m for m in turns[1]["_aws"]["CloudWatchMetrics"][0]["Metrics"] if m["Name"] == "LatencyBreach"]
    assert breach == [{"Name": "LatencyBreach", "Unit": "Count", "StorageResolution": 1}]
    requests = [d for d in documents if "Requests" in d]
    assert [(d["route"], d["status"]) for d in requests] == [("/v1/chat/completions", "200")] * 3
    [load] = [d for d in documents if "ModelLoadTime" in d]  # cold start: the model load, once
    assert load["ModelLoadTime"][0] > 0
    assert any("ProcessMemory" in d and d["ProcessMemory"][0] > 0 for d in documents)

    # Powertools Logger: JSON lines, each with the request id and the session id of its request
    assert all("request_id" in line and "session_id" in line and line["service"] == "clawdbot" for line in logs)
    served = [line for line in logs if line["message"].startswith(("recorded turn", "latency breach"))]
    assert len(served) == 5  # three turns recorded, two breaches
    for line in served:
        assert line["request_id"].startswith("req-") and line["session_id"] == session_id
        assert "function_request_id" in line  # the Lambda context was injected
    assert sorted({line["request_id"] for line in served}) == ["req-0", "req-1", "req-2"]


# ---------------------------------------------------------------------------------------- latency guard
@pytest.fixture(params=["redis", "dynamodb"])
def make_counter(request: pytest.FixtureRequest) -> Callable[[], StreakCounter]:
    """Counters of separate "instances" (each its own client) sharing one store."""
    if request.param == "redis":
        url = request.getfixturevalue("redis_server")
        return lambda: RedisStreakCounter.from_url(url)
    import boto3

    table = request.getfixturevalue("traffic_table")
    endpoint = request.getfixturevalue("dynamodb_local")
    return lambda: DynamoDBStreakCounter(table, client=boto3.client("dynamodb", endpoint_url=endpoint))


def test_streak_spans_instances_and_any_fast_turn_resets_it(make_counter: Callable[[], StreakCounter]) -> None:
    # GIVEN three stateless instances, each with its own connection to the shared counter
    guards = [LatencyGuard(make_counter(), threshold_ms=1000, turns=5) for _ in range(3)]
    variant = "v-" + uuid.uuid4().hex[:8]
    slow, fast = 1500.0, 200.0

    def turn(i: int, latency: float) -> bool:
        return guards[i % 3].observe(variant, latency)

    # WHEN four slow turns land on different instances, then a fast one
    assert [turn(i, slow) for i in range(4)] == [False] * 4
    assert turn(4, fast) is False
    # THEN the streak started over: it takes five more consecutive slow turns, wherever they land, to breach
    assert [turn(i, slow) for i in range(5, 11)] == [False, False, False, False, True, True]
    assert turn(11, fast) is False
    assert turn(12, slow) is False
    # AND variants keep separate streaks; exactly-at-threshold is not slow
    other = variant + "-b"
    assert [guards[i % 3].observe(other, 1000.0) for i in range(6)] == [False] * 6
    for guard in guards:
        guard.counter.close()


def test_memory_counter_for_the_embedded_server() -> None:
    guard = LatencyGuard(MemoryStreakCounter(), threshold_ms=10, turns=2)
    assert [guard.observe("a", ms) for ms in (11, 11, 11, 5, 11, 20)] == [False, True, True, False, False, True]


def test_infrastructure_readings() -> None:
    from clawdbot.metrics import infra

    assert infra.process_memory_bytes() > 10_000_000
    before = infra.process_cpu_seconds()
    sum(i * i for i in range(200_000))
    assert infra.process_cpu_seconds() > before
    # one reader per GPU that NVML finds (none on a machine without one); each reads a busy percentage
    for read in infra.gpu_readers().values():
        value = read()
        assert value is None or 0 <= value <= 100
