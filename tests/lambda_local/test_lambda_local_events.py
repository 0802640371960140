"""The sample events in ``events/`` and the one helper that loads them (``clawdbot.testing.load_event``)."""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING

import pytest

from clawdbot.testing import DEFAULT_EVENTS_DIR, LambdaContext, event_path, load_event

if TYPE_CHECKING:
    from pathlib import Path

HTTP_API_EVENTS = ["chat-completion", "chat-completion-base64", "session-read", "bad-request"]


def decoded_body(event: dict) -> bytes:
    body = event.get("body", "")
    return base64.b64decode(body) if event["isBase64Encoded"] else body.encode()


@pytest.mark.parametrize("name", HTTP_API_EVENTS)
def test_sample_event_has_the_payload_2_0_shape(name: str) -> None:
    event = load_event(name)

    assert event["version"] == "2.0"
    assert {"routeKey", "rawPath", "rawQueryString", "headers", "requestContext", "isBase64Encoded"} <= set(event)
    context = event["requestContext"]
    assert {"accountId", "apiId", "domainName", "requestId", "routeKey", "stage", "time", "timeEpoch"} <= set(context)
    assert set(context["http"]) == {"method", "path", "protocol", "sourceIp", "userAgent"}
    assert context["http"]["path"] == event["rawPath"]
    # API Gateway delivers header names in lower case, and cookies only in the "cookies" field.
    assert all(name == name.lower() for name in event["headers"])
    assert "cookie" not in event["headers"]
    if "body" in event:
        assert event["headers"]["content-length"] == str(len(decoded_body(event)))


def test_base64_event_carries_the_same_request_as_the_plain_one() -> None:
    plain, encoded = load_event("chat-completion"), load_event("chat-completion-base64")

    assert encoded["isBase64Encoded"] is True and plain["isBase64Encoded"] is False
    assert decoded_body(encoded) == decoded_body(plain)
    assert encoded["cookies"] and all("=" in cookie for cookie in encoded["cookies"])


def test_chat_completion_event_asks_for_a_short_completion() -> None:
    request = json.loads(load_event("chat-completion")["body"])

    assert request["messages"][-1]["role"] == "user"
    assert request["max_tokens"] <= 32


def test_bad_request_event_body_is_not_json() -> None:
    with pytest.raises(json.JSONDecodeError):
        json.loads(load_event("bad-request")["body"])


def test_event_is_found_by_name_file_name_or_path(tmp_path: Path) -> None:
    by_path = tmp_path / "custom.json"
    by_path.write_text('{"hello": "world"}')

    assert event_path("session-read") == DEFAULT_EVENTS_DIR / "session-read.json"
    assert event_path("session-read.json") == DEFAULT_EVENTS_DIR / "session-read.json"
    assert load_event(by_path) == {"hello": "world"}
    assert load_event("custom", events_dir=tmp_path) == {"hello": "world"}


def test_missing_or_invalid_event_file_is_reported(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")

    with pytest.raises(FileNotFoundError, match="no-such-event"):
        load_event("no-such-event")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_event(broken)


def test_override_body_path_method_and_headers() -> None:
    event = load_event("chat-completion", body={"model": "m", "messages": []}, path="/v1/models?a=1&a=2&b=",
                       method="get", headers={"X-Request-Id": "abc"})

    assert event["body"] == '{"model":"m","messages":[]}'
    assert event["headers"]["content-length"] == str(len(event["body"]))
    assert event["rawPath"] == event["requestContext"]["http"]["path"] == "/v1/models"
    assert event["rawQueryString"] == "a=1&a=2&b="
    assert event["queryStringParameters"] == {"a": "1,2", "b": ""}  # payload 2.0 joins repeated parameters
    assert event["requestContext"]["http"]["method"] == "GET"
    assert event["headers"]["x-request-id"] == "abc"


def test_body_override_keeps_base64_encoding_and_bytes_force_it() -> None:
    encoded = load_event("chat-completion-base64", body='{"x": "é"}')
    binary = load_event("chat-completion", body=b"\x00\xff")

    assert encoded["isBase64Encoded"] is True
    assert base64.b64decode(encoded["body"]) == '{"x": "é"}'.encode()
    assert encoded["headers"]["content-length"] == str(len('{"x": "é"}'.encode()))
    assert binary["isBase64Encoded"] is True and base64.b64decode(binary["body"]) == b"\x00\xff"


def test_body_none_removes_the_body() -> None:
    event = load_event("chat-completion", body=None)

    assert "body" not in event and "content-length" not in event["headers"]
    assert event["isBase64Encoded"] is False


def test_overrides_are_refused_for_events_that_are_not_http_api(tmp_path: Path) -> None:
    sqs_like = tmp_path / "sqs.json"
    sqs_like.write_text('{"Records": []}')

    with pytest.raises(ValueError, match=r"payload format 2\.0"):
        load_event(sqs_like, body="x")


def test_each_load_returns_a_fresh_copy() -> None:
    first = load_event("chat-completion", path="/elsewhere")

    assert load_event("chat-completion")["rawPath"] == "/v1/chat/completions" != first["rawPath"]


def test_lambda_context_looks_like_the_runtime_one() -> None:
    context = LambdaContext(function_name="chat-api", timeout_s=3)

    assert context.invoked_function_arn == "arn:aws:lambda:us-east-1:123456789012:function:chat-api"
    assert context.log_group_name == "/aws/lambda/chat-api"
    assert context.memory_limit_in_mb == "128"
    assert 0 < context.get_remaining_time_in_millis() <= 3000
    assert LambdaContext().aws_request_id != LambdaContext().aws_request_id
