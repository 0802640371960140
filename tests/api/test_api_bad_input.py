"""Bad input gets the documented status and OpenAI's error shape, and loses nothing already stored."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import httpx

GOOD_MESSAGES = [{"role": "user", "content": "hello"}]


def _body(model_id: str, **overrides: Any) -> dict[str, Any]:
    return {"model": model_id, "messages": GOOD_MESSAGES, "max_tokens": 4, **overrides}


# (name, how to build the request content, expected status, expected error code, expected param)
CASES: list[tuple[str, Any, int, str | None, str | None]] = [
    ("invalid JSON", lambda m: b'{"model": "x", "messages": [', 400, "invalid_json", None),
    ("no body", lambda m: b"", 400, "invalid_json", None),
    ("not UTF-8", lambda m: b'{"model": "\xff", "messages": []}', 400, "invalid_json", None),
    ("body is not an object", lambda m: b"[1, 2, 3]", 400, None, None),
    ("wrong type for messages", lambda m: json.dumps(_body(m, messages="hello")).encode(), 400, None, "messages"),
    ("wrong type for temperature", lambda m: json.dumps(_body(m, temperature="hot")).encode(), 400, None,
     "temperature"),
    ("empty messages", lambda m: json.dumps(_body(m, messages=[])).encode(), 400, None, "messages"),
    ("unknown role", lambda m: json.dumps(_body(m, messages=[{"role": "wizard", "content": "hi"}])).encode(),
     400, None, "messages.0.role"),
    ("missing model", lambda m: json.dumps({"messages": GOOD_MESSAGES}).encode(), 400,
     "missing_required_parameter", "model"),
    ("negative max_tokens", lambda m: json.dumps(_body(m, max_tokens=-5)).encode(), 400, None, "max_tokens"),
    ("zero max_completion_tokens", lambda m: json.dumps(_body(m, max_completion_tokens=0)).encode(), 400, None,
     "max_completion_tokens"),
    ("top_p out of range", lambda m: json.dumps(_body(m, top_p=1.5)).encode(), 400, None, "top_p"),
    ("n greater than one", lambda m: json.dumps(_body(m, n=3)).encode(), 400, None, "n"),
    ("stream_options without stream", lambda m: json.dumps(_body(m, stream_options={"include_usage": True})).encode(),
     400, None, None),
    ("2 MB body", lambda m: json.dumps(_body(m, messages=[{"role": "user", "content": "x" * 2_000_000}])).encode(),
     413, "request_too_large", None),
    ("context too long", lambda m: json.dumps(_body(m, max_tokens=1_000_000)).encode(), 400,
     "context_length_exceeded", "messages"),
]


def _assert_openai_error(response: httpx.Response, status: int, code: str | None, param: str | None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["x-request-id"]
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert error["type"] == "invalid_request_error"
    if code is not None:
        assert error["code"] == code
    if param is not None:
        assert error["param"] == param
    assert "Traceback" not in response.text


@pytest.fixture(scope="module")
def stored_session(http: httpx.Client, model_id: str) -> str:
    session_id = http.post("/v1/sessions", json={"metadata": {"purpose": "bad-input"}}).json()["id"]
    reply = http.post("/v1/chat/completions", json=_body(model_id), headers={"x-session-id": session_id})
    assert reply.status_code == 200, reply.text
    return session_id


@pytest.mark.parametrize(("name", "content", "status", "code", "param"), CASES, ids=[c[0] for c in CASES])
def test_bad_chat_request_is_rejected_and_session_unchanged(http: httpx.Client, model_id: str, stored_session: str,
                                                            name: str, content: Any, status: int, code: str | None,
                                                            param: str | None) -> None:
    before = http.get(f"/v1/sessions/{stored_session}").json()
    response = http.post("/v1/chat/completions", content=content(model_id),
                         headers={"content-type": "application/json", "x-session-id": stored_session})
    _assert_openai_error(response, status, code, param)
    after = http.get(f"/v1/sessions/{stored_session}").json()
    assert after["messages"] == before["messages"]
    assert after["message_count"] == before["message_count"] == 2


def test_chat_body_must_be_sent_as_json(http: httpx.Client, model_id: str, stored_session: str) -> None:
    """The chat route reads its body itself (``clawdbot.api.json_body``), with the rules FastAPI applies: a JSON
    content type (parameters and ``+json`` subtypes included), an optional UTF-8 byte order mark."""
    content = json.dumps(_body(model_id)).encode()
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {"x-session-id": stored_session} | ({"content-type": content_type} if content_type else {})
        _assert_openai_error(http.post("/v1/chat/completions", content=content, headers=headers), 400, None, None)
    assert http.get(f"/v1/sessions/{stored_session}").json()["message_count"] == 2
    for content_type in ("application/json; charset=utf-8", "application/vnd.clawdbot+json", "Application/JSON"):
        answer = http.post("/v1/chat/completions", content=content, headers={"content-type": content_type})
        assert answer.status_code == 200, (content_type, answer.text)
    answer = http.post("/v1/chat/completions", content=b"\xef\xbb\xbf" + content,
                       headers={"content-type": "application/json"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["usage"]["completion_tokens"] >= 1


def test_chat_route_documents_its_body_and_headers(http: httpx.Client) -> None:
    """Served by its own handler, the chat route is still documented from its signature."""
    operation = http.get("/openapi.json").json()["paths"]["/v1/chat/completions"]["post"]
    body = operation["requestBody"]
    assert body["required"] is True
    assert body["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ChatCompletionRequest"}
    headers = {p["name"] for p in operation["parameters"] if p["in"] == "header"}
    assert headers == {"x-session-id", "x-clawdbot-variant", "idempotency-key"}


def test_unknown_session_is_404_everywhere(http: httpx.Client, model_id: str) -> None:
    missing = "sess_0123456789abcdef0123456789abcdef"
    _assert_openai_error(http.get(f"/v1/sessions/{missing}"), 404, "session_not_found", "session_id")
    _assert_openai_error(http.delete(f"/v1/sessions/{missing}"), 404, "session_not_found", "session_id")
    _assert_openai_error(http.post("/v1/chat/completions", json=_body(model_id), headers={"x-session-id": missing}),
                         404, "session_not_found", "session_id")


def test_invalid_session_id_and_unknown_url(http: httpx.Client) -> None:
    _assert_openai_error(http.get("/v1/sessions/bad%20id!"), 400, "invalid_session_id", "session_id")
    _assert_openai_error(http.get("/v1/nothing-here"), 404, "unknown_url", None)


def test_creating_a_session_twice_conflicts_and_keeps_the_first(http: httpx.Client) -> None:
    first = http.post("/v1/sessions", json={"id": "named-session-1", "metadata": {"v": "1"}})
    assert first.status_code == 201
    again = http.post("/v1/sessions", json={"id": "named-session-1", "metadata": {"v": "2"}})
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "session_exists"
    assert http.get("/v1/sessions/named-session-1").json()["metadata"] == {"v": "1"}


def test_request_id_is_echoed_or_generated(http: httpx.Client) -> None:
    assert http.get("/healthz", headers={"x-request-id": "abc-123"}).headers["x-request-id"] == "abc-123"
    generated = http.get("/healthz").headers["x-request-id"]
    assert len(generated) == 32


def test_session_pagination_and_delete(http: httpx.Client, model_id: str) -> None:
    session_id = http.post("/v1/sessions", json={}).json()["id"]
    for text in ("one", "two", "three"):
        r = http.post("/v1/chat/completions", headers={"x-session-id": session_id},
                      json=_body(model_id, messages=[{"role": "user", "content": text}], max_tokens=2))
        assert r.status_code == 200, r.text
    page1 = http.get(f"/v1/sessions/{session_id}", params={"limit": 4}).json()["messages"]
    assert [m["seq"] for m in page1["data"]] == [0, 1, 2, 3] and page1["has_more"]
    page2 = http.get(f"/v1/sessions/{session_id}",
                     params={"limit": 4, "after": page1["next_after"]}).json()["messages"]
    assert [m["seq"] for m in page2["data"]] == [4, 5] and not page2["has_more"]
    assert [m["content"] for m in page1["data"] if m["role"] == "user"] == ["one", "two"]
    deleted = http.delete(f"/v1/sessions/{session_id}")
    assert deleted.json() == {"id": session_id, "object": "session.deleted", "deleted": True}
    assert http.get(f"/v1/sessions/{session_id}").status_code == 404
